"""Counters of one Redis backplane."""

from __future__ import annotations

import attrs

__all__ = ["RedisStats"]


@attrs.define(eq=False)
class RedisStats:
    """Counters of one :class:`~trioroom.backplane.redis.RedisBackplane`.

    For tests, benchmarks and debugging; Prometheus metrics are on the server.
    """

    #: Room messages and direct messages handed to Redis.
    room_published: int = 0
    direct_published: int = 0
    #: Pipelined writes of the publisher and the commands they carried.
    batches: int = 0
    commands: int = 0
    #: Messages received on the subscriber connection.
    room_received: int = 0
    direct_received: int = 0
    #: Own room messages coming back on a subscribed channel (skipped).
    echoes: int = 0
    #: Messages received a second time (sent again by their node): skipped.
    duplicates: int = 0
    #: Connections established (the first one included).
    sessions: int = 0
    #: Dead nodes whose members this node removed.
    nodes_swept: int = 0
    members_swept: int = 0
