"""Which of the hosts in Locust's ``--host`` a user talks to.

Pure (no Locust): the users of each class take the hosts in turn, so each
class spreads evenly over the nodes of a cluster.
"""

from __future__ import annotations

import itertools

#: Per user class, the next node number to hand out (one counter per process).
_NODE_COUNTERS: dict[str, itertools.count[int]] = {}


def next_node(user_class: str, offset: int = 0) -> int:
    """The node number of the next user of ``user_class``: 0, 1, 2, ... from
    ``offset`` (the worker's index, so workers do not all start at node 0)."""
    counter = _NODE_COUNTERS.setdefault(user_class, itertools.count())
    return next(counter) + offset
