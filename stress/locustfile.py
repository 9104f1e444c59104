"""Locust entry point of the cc-executor stress harness.

    locust -f stress/locustfile.py --host ws://127.0.0.1:8003/ws/mcp
    locust -f stress/locustfile.py --host ws://node-a:8003/ws/mcp,ws://node-b:8003/ws/mcp

``ci/stress`` (``make stress``, ``make stress-ui``, ``make stress-t02``,
``make stress-t03``) starts a server and runs this file against it; see
``docs/stress.md``. The users live in :mod:`stress.users` and
:mod:`stress.capability_users` and :mod:`stress.cluster_users`, the hooks (options,
RSS sampling, orphans, gates, summary) in :mod:`stress.plugin`.
"""

from stress.capability_users import AgentUser, ReconnectUser
from stress.cluster_users import ClusterUser
from stress.plugin import register
from stress.users import ControlUser, JobUser, StreamUser

__all__ = ["AgentUser", "ClusterUser", "ControlUser", "JobUser", "ReconnectUser", "StreamUser"]

register()
