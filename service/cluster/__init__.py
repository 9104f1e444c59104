"""Several nodes sharing one PostgreSQL store: node identity and leases, the
``LISTEN/NOTIFY`` bus, requests forwarded between nodes, following an
execution of another node, and the cluster-wide project lock.

:class:`Cluster` (``cluster.py``) is what the composition root builds; the
rest are its parts, one concept per module.
"""

from service.cluster.cluster import Cluster
from service.cluster.identity import node_id_of

__all__ = ["Cluster", "node_id_of"]
