"""The compose ``cluster`` profile agrees with itself and with the proxy's
config: the schema check in ``ci/lint`` cannot see that two nodes share a
data volume, that a node lacks the store URL, or that HAProxy names a node
compose does not run. (No Docker engine here: this reads the file.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
NODES = ("node-a", "node-b")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_cluster_profile_has_postgres_two_nodes_and_a_proxy() -> None:
    services = compose()["services"]
    cluster = {name for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    assert {"postgres", *NODES, "proxy"} <= cluster
    # The single-node service and the default harness stay out of the profile.
    assert not {"executor", "master", "worker"} & cluster

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "ports" not in postgres  # only the nodes reach it


def test_nodes_have_their_own_id_and_data_and_share_the_store() -> None:
    services = compose()["services"]
    ids, data = set(), set()
    for name in NODES:
        node = services[name]
        env = node["environment"]
        ids.add(env["CC_EXECUTOR_NODE_ID"])
        assert env["CC_EXECUTOR_NODE_ID"] == name
        (data_volume,) = [v.split(":")[0] for v in node["volumes"] if v.endswith(":/data")]
        data.add(data_volume)
        assert "cluster.env" in node["env_file"]  # CC_EXECUTOR_STORE_URL
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
        assert "ports" not in node  # clients come through the proxy
    assert len(ids) == len(NODES) and len(data) == len(NODES)
    assert set(data) <= set(compose()["volumes"])


def test_proxy_runs_the_checked_config_in_front_of_the_compose_nodes() -> None:
    proxy = compose()["services"]["proxy"]
    (mount,) = [v for v in proxy["volumes"] if "haproxy.cfg" in v]
    source = mount.split(":")[0]
    config = (ROOT / source).read_text()
    assert (ROOT / source).resolve() == ROOT / "deploy" / "haproxy" / "haproxy.cfg"
    servers = re.findall(r'^\s*server (\S+) "\$\{CCX_\w+-([\w-]+):8003\}" check', config, re.M)
    assert servers == [(name, name) for name in NODES]
    assert "balance leastconn" in config and "cookie" not in config  # no stickiness
    assert "uri /health" in config and "Bearer ${CC_EXECUTOR_TOKEN" in config
    assert all(p.startswith("127.0.0.1:") for p in proxy["ports"])
