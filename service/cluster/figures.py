"""The cluster's Prometheus families (``/metrics``), read at scrape time.

Labels stay bounded: node states, never a node id or an execution id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from service.cluster.cluster import Cluster

NODE_STATES = ("up", "down", "dead")


class ClusterCollector(Collector):
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def describe(self) -> Iterator[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        cluster = self.cluster
        bus = cluster.bus
        connected = GaugeMetricFamily(
            "cc_executor_cluster_bus_connected",
            "Whether this node's LISTEN connection is up (1; always 0 on SQLite: no bus).",
        )
        connected.add_metric([], 1.0 if bus is not None and bus.connected.is_set() else 0.0)
        yield connected
        losses = CounterMetricFamily(
            "cc_executor_cluster_bus_losses",
            "Times this node's LISTEN connection was lost (then re-established).",
        )
        losses.add_metric([], float(bus.losses if bus is not None else 0))
        yield losses
        nodes = GaugeMetricFamily(
            "cc_executor_cluster_nodes", "Nodes of the cluster, by state.", labels=["state"]
        )
        counts = Counter(str(row["state"]) for row in cluster.remote.view)
        for state in NODE_STATES:
            nodes.add_metric([state], float(counts[state]))
        yield nodes
        dead = CounterMetricFamily(
            "cc_executor_cluster_declared_dead",
            "Nodes this node declared dead (their lease expired), marking their executions lost.",
        )
        dead.add_metric([], float(cluster.declared_dead))
        yield dead
        served = CounterMetricFamily(
            "cc_executor_cluster_requests_served",
            "Requests of other nodes this node answered (control, input, execute, ...).",
        )
        served.add_metric([], float(cluster.rpc.served))
        yield served
