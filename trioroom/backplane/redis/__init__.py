"""The Redis backplane: several trioroom processes behave as one server.

Every node (one :class:`~trioroom.Server` with one :class:`RedisBackplane`)
keeps exactly two Redis connections for its traffic:

* a **subscriber** connection, subscribed to its own node channel (direct
  messages) and to one channel per room that has local members. It
  subscribes when a room's first local member joins and unsubscribes when
  the last one leaves, so a node only receives traffic for its rooms.
* a **publisher** connection fed by one ordered queue. Room publishes, direct
  messages and membership updates all go through that queue; a task drains
  it and pipelines each batch in one write. Redis delivers the messages of
  one publisher connection to one subscriber connection in order, so FIFO
  per sender and recipient holds across nodes.

A third, pooled connection serves reads (member lists, liveness checks).
Membership lives in Redis hashes and sets (``docs/scaling.md`` lists every
key); each node refreshes a liveness key with a TTL, and the other nodes
sweep the members of a node whose key expired, sending ``member_left`` for
them. When Redis goes away, local delivery goes on, cross-node messages wait
in a bounded outbox (``outbox_bytes``, ``outbox_seconds``; past the bound
they are dropped, counted and their extended senders told), failed
membership changes are counted in ``metrics.backplane_errors`` (and logged,
rate limited), and the backplane reconnects with backoff, re-registers the
node's membership from the server's own state, resubscribes, and sends the
outbox once the other nodes listen again.

The modules, one job each:

* :mod:`.backplane`: :class:`RedisBackplane`, the coordinator: the
  :class:`~trioroom.backplane.Backplane` seam and the session loop.
* :mod:`.wire`: the envelopes of room and direct messages on the channels.
* :mod:`.keys`: the names of every key and channel.
* :mod:`.membership`: the Lua scripts and commands of membership, and the
  local record of it that a new session registers again.
* :mod:`.egress`: the ordered command queue and the task pipelining it.
* :mod:`.outbox`: what waits while Redis is unreachable (size and age bound).
* :mod:`.ingress`: the subscriptions and delivery of what they bring.
* :mod:`.liveness`: registration, heartbeat, ``ready`` keys, sweeps of dead
  nodes, and cleanup on exit.
* :mod:`.reconnect`: the reconnection loop with backoff, and its log.
* :mod:`.stats`: :class:`RedisStats`, the counters.

Every module logs to the ``trioroom.backplane.redis`` logger.
"""

from __future__ import annotations

try:
    import anyio  # noqa: F401
    import coredis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis backplane needs coredis and anyio: pip install 'trioroom[redis]'"
    ) from exc

from .backplane import RedisBackplane
from .stats import RedisStats

__all__ = ["RedisBackplane", "RedisStats"]
