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
membership changes are counted in ``server.metrics.backplane_errors`` (and
logged, rate limited), and the backplane reconnects with backoff,
re-registers the node's membership from the server's own state,
resubscribes, and sends the outbox once the other nodes listen again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import socket
import struct
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..codes import ROOT
from ..log import BoundedLog
from ..protocol import FrameError, decode_fields, encode
from .base import Backplane

try:
    from coredis import PureToken, Redis
    from coredis.commands.request import CommandRequest
    from coredis.connection import BaseConnection
    from coredis.connection._tcp import TCPLocation
    from coredis.connection._uds import UnixDomainSocketLocation
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import NoScriptError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis backplane needs coredis and anyio: pip install 'trioroom[redis]'"
    ) from exc

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["RedisBackplane", "RedisStats"]

logger = logging.getLogger("trioroom.backplane.redis")


#: Envelope of a room message: origin node (16 bytes), length of ``exclude``.
_ROOM_HEADER = struct.Struct(">16sH")
#: Envelope of a direct message: length of the target connection ID.
_LEN = struct.Struct(">H")
#: Origin of messages every node delivers (sweeper notices).
_SYSTEM_ORIGIN = bytes(16)

# Membership scripts. They are idempotent, so re-registering after a
# reconnect or a sweep racing a sweep does no harm.
#
# KEYS: members:<room>, nodemembers:<node>, rooms, conns, nodeconns:<node>
# ARGV: conn id, "<room>\0<conn id>", room, node
_JOIN = b"""
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[1])
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  return 1
end
return 0
"""
# KEYS: members:<room>, nodemembers:<node>, rooms
# ARGV: conn id, "<room>\0<conn id>", room, node, room channel, notice or ""
_LEAVE = b"""
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[4] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1
"""
# KEYS: conns, nodeconns:<node>; ARGV: conn id, node
_UNREGISTER = b"""
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
# KEYS: conns; ARGV: conn id, node channel prefix, payload.
# Returns the number of receiving nodes, or -1 for an unknown connection.
_DIRECT = b"""
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then
  return -1
end
return redis.call('PUBLISH', ARGV[2] .. node, ARGV[3])
"""
_SCRIPTS = (_JOIN, _LEAVE, _UNREGISTER, _DIRECT)
#: What SCRIPT LOAD answers for _DIRECT (direct messages held before any session).
_DIRECT_SHA = hashlib.sha1(_DIRECT).hexdigest().encode()

# Kinds of queued operations.
_PUBLISH = 0
_DIRECT_MESSAGE = 1
_MEMBERSHIP = 2


class _StateLost(Exception):
    """Redis no longer has this node's liveness key (restart, flush or sweep)."""


class _Op:
    """One command in the ordered publisher queue."""

    __slots__ = ("args", "event", "failed", "kind", "since")

    def __init__(self, args: tuple[Any, ...], kind: int, wait: bool = False) -> None:
        self.args = args
        self.kind = kind
        self.event: trio.Event | None = trio.Event() if wait else None
        self.failed = False
        #: When it entered the outbox (0: never).
        self.since = 0.0

    @property
    def size(self) -> int:
        """Bytes of the message a publish carries (its last argument)."""
        return len(self.args[-1])


@attrs.define(eq=False)
class RedisStats:
    """Counters of one :class:`RedisBackplane` (for tests and benchmarks)."""

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
    #: Connections established (the first one included).
    sessions: int = 0
    #: Dead nodes whose members this node removed.
    nodes_swept: int = 0
    members_swept: int = 0


class RedisBackplane(Backplane):
    """Join trioroom servers in several processes or machines through Redis.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://...`` or
            ``unix:///path/to/socket``.
        prefix: Prefix of every key and channel. Pub/sub channels are shared
            by all databases of a Redis server, so separate clusters on one
            Redis need different prefixes, not only different databases.
        node_ttl: Lifetime of this node's liveness key, refreshed every third
            of it. Other nodes remove the members of a node whose key expired,
            so a node killed without cleanup is noticed within about
            ``1.6 * node_ttl``.
        op_timeout: Bound on each Redis operation. A membership change
            waiting longer goes on without Redis (counted as an error).
        reconnect_max: Longest pause between two reconnection attempts.
        max_queue: Commands waiting for the publisher at most; beyond that,
            cross-node sends are dropped and counted as errors.
        max_batch: Commands per pipelined write.
        reconcile_interval: How often the node compares its membership in
            Redis with its local state and repairs the difference.
        outbox_bytes: While Redis is unreachable, room publishes and direct
            messages (membership notices included) wait in an outbox of at
            most this many message bytes; they go out in order when Redis is
            back, before any new traffic. A message that does not fit is
            dropped (the newest: what waits keeps its order), counted in
            ``frames_dropped{reason="backplane_outbox"}``, and its extended
            sender gets a ``backplane_unavailable`` error. 0 turns the outbox
            off (cross-node messages are dropped during an outage).
        outbox_seconds: A message that waited this long in the outbox is
            dropped the same way.
    """

    distributed = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "trioroom",
        node_ttl: float = 10.0,
        op_timeout: float = 2.0,
        reconnect_max: float = 5.0,
        max_queue: int = 100_000,
        max_batch: int = 1000,
        reconcile_interval: float = 30.0,
        outbox_bytes: int = 16 * 1024 * 1024,
        outbox_seconds: float = 60.0,
    ) -> None:
        if node_ttl < 0.3:
            raise ValueError("node_ttl must be at least 0.3 seconds")
        if op_timeout <= 0 or reconnect_max <= 0 or reconcile_interval <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        if outbox_bytes < 0 or outbox_seconds < 0:
            raise ValueError("outbox_bytes and outbox_seconds must not be negative")
        if urllib.parse.urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: {url!r} (redis://, rediss:// or unix://)")
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.op_timeout = op_timeout
        self.reconnect_max = reconnect_max
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.reconcile_interval = reconcile_interval
        self.outbox_bytes = outbox_bytes
        self.outbox_seconds = outbox_seconds
        #: This node's ID in Redis (new for every process).
        self.node_id = uuid.uuid4().hex
        self.stats = RedisStats()

        p = prefix.encode() + b":"
        self._node = self.node_id.encode()
        self._origin = uuid.UUID(self.node_id).bytes
        self._p_room = p + b"room:"
        self._p_node = p + b"node:"
        self._p_members = p + b"members:"
        self._p_alive = p + b"alive:"
        self._p_nodemembers = p + b"nodemembers:"
        self._p_nodeconns = p + b"nodeconns:"
        self._p_sweep = p + b"sweep:"
        self._p_ready = p + b"ready:"
        self._k_nodes = p + b"nodes"
        self._k_rooms = p + b"rooms"
        self._k_conns = p + b"conns"
        self._node_channel = self._p_node + self._node

        self._server: Server | None = None
        self._client: Redis[bytes] | None = None
        self._sub: BaseConnection | None = None
        self._up = False
        self._first_attempt = trio.Event()
        self._shas: list[bytes] = []
        # Local membership as last told to Redis: room -> conn IDs.
        self._local: dict[str, set[str]] = {}
        self._conn_rooms: Counter[str] = Counter()
        # Local memberships the server did not have at the last reconcile.
        self._stale: set[tuple[str, str]] = set()
        # Subscribed channels -> acknowledgement, and channel -> room.
        self._subs: dict[bytes, trio.Event] = {}
        self._channel_rooms: dict[bytes, str] = {}
        self._queue: deque[_Op] = deque()
        # Publishes held while Redis is unreachable, oldest first, and their bytes.
        self._outbox: deque[_Op] = deque()
        self._outbox_size = 0
        # Other nodes seen alive (their subscriptions gate the outbox on return).
        self._peers: set[bytes] = set()
        # Origins of room messages received (nodes sharing rooms with this one).
        self._origins: set[bytes] = set()
        self._outbox_log = BoundedLog(logger)
        self._wake: trio.Event | None = None
        self._failed_since_warning = 0
        self._last_warning = -math.inf
        self._closing = False

    # -- state ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while Redis is reachable and this node is registered."""
        return self._up

    @property
    def up(self) -> bool:
        """The same as :attr:`connected`: the other nodes are reachable through Redis."""
        return self._up

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the backplane is not running")
        return self._server

    def _room_channel(self, room: str) -> bytes:
        return self._p_room + room.encode()

    def _fail(self, what: str, count: int = 1) -> None:
        """Count failed cross-node operations; warn at most every 5 seconds."""
        if self._server is not None:
            self._server.metrics.backplane_errors += count
        self._failed_since_warning += count
        now = time.monotonic()
        if now - self._last_warning >= 5.0 and not self._closing:
            logger.warning(
                "Redis backplane: %s failed; %d cross-node operation(s) failed since the "
                "last warning (local delivery goes on)",
                what,
                self._failed_since_warning,
            )
            self._last_warning = now
            self._failed_since_warning = 0

    # -- the Backplane seam -------------------------------------------------------

    async def run(
        self, server: Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, keep connected, and clean up this node's state on exit.

        Signals readiness once the first connection attempt succeeded (or
        failed: the server then starts without Redis and the backplane keeps
        trying in the background).
        """
        if self._server is not None:
            raise RuntimeError("a RedisBackplane serves one server, once")
        self._server = server
        client = self._make_client()
        try:
            async with client:
                self._client = client
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._maintain, client)
                    with trio.move_on_after(self.op_timeout * 3):
                        await self._first_attempt.wait()
                    task_status.started()
        finally:
            # Connections closing along with us fail to reach Redis: expected.
            self._closing = True
            self._client = None
            self._go_down()
            if self.stats.sessions:
                with trio.CancelScope(shield=True), trio.move_on_after(self.op_timeout):
                    await self._deregister()

    async def joined(self, room: str, conn_id: str) -> None:
        members = self._local.get(room)
        if members is None:
            members = self._local[room] = set()
        if conn_id not in members:
            members.add(conn_id)
            self._conn_rooms[conn_id] += 1
        if not self._up:
            self._fail("join")
            return
        subscribed = self._subscribe([room])
        op = self._push(_Op(self._join_args(room, conn_id), _MEMBERSHIP, wait=True))
        assert op.event is not None
        with trio.move_on_after(self.op_timeout) as scope:
            await subscribed.wait()
            await op.event.wait()
        if scope.cancelled_caught or op.failed or not self._up:
            self._fail("join")

    async def left(self, room: str, conn_id: str) -> None:
        members = self._local.get(room)
        emptied = False
        if members is not None and conn_id in members:
            members.discard(conn_id)
            self._forget_conn_room(conn_id)
            if not members:
                del self._local[room]
                emptied = True
        gone = self._conn_rooms[conn_id] <= 0 and self.server.connection(conn_id) is None
        if gone:
            self._conn_rooms.pop(conn_id, None)
        if not self._up:
            self._fail("leave")
            return
        if emptied:
            self._unsubscribe([room])
        op = self._push(_Op(self._leave_args(room, conn_id, self._node), _MEMBERSHIP, wait=True))
        if gone:
            op = self._push(_Op(self._unregister_args(conn_id, self._node), _MEMBERSHIP, True))
        assert op.event is not None
        with trio.move_on_after(self.op_timeout) as scope:
            await op.event.wait()
        if scope.cancelled_caught or op.failed or not self._up:
            self._fail("leave")

    async def remote_members(self, room: str, *, limit: int | None = None) -> list[str]:
        client = self._client
        if client is None or not self._up:
            self._fail("member list")
            await trio.lowlevel.checkpoint()
            return []
        if limit is not None and limit <= 0:
            await trio.lowlevel.checkpoint()
            return []
        key = self._p_members + room.encode()
        items: dict[bytes, bytes] | None = None
        with trio.move_on_after(self.op_timeout):
            try:
                if limit is None:
                    items = await client.hgetall(key)
                else:
                    # A sample is enough for a capped list (the root room):
                    # never read a whole large room for it.
                    local = len(self._local.get(room, ()))
                    count = limit + min(local, 4 * limit + 64)
                    items = await client.hrandfield(key, count=count, withvalues=True) or {}
            except Exception as exc:
                logger.debug("member list of %r failed: %r", room, exc)
        if items is None:
            self._fail("member list")
            return []
        node = self._node
        ids = [field.decode() for field, owner in items.items() if owner != node]
        return ids if limit is None else ids[:limit]

    async def remote_rooms(self) -> list[str]:
        client = self._client
        if client is None or not self._up:
            self._fail("room list")
            await trio.lowlevel.checkpoint()
            return []
        counts: dict[bytes, bytes] | None = None
        with trio.move_on_after(self.op_timeout):
            try:
                counts = await client.hgetall(self._k_rooms)
            except Exception as exc:
                logger.debug("room list failed: %r", exc)
        if counts is None:
            self._fail("room list")
            return []
        names = []
        for raw, count in counts.items():
            name = raw.decode()
            if int(count) > len(self._local.get(name, ())):
                names.append(name)
        return names

    def publish_room(self, room: str, message: bytes, exclude: str) -> None:
        if not self._up or self._outbox:
            # Down, or back but the outbox has not gone out yet: it keeps the order.
            excluded = exclude.encode()
            data = b"".join((_ROOM_HEADER.pack(self._origin, len(excluded)), excluded, message))
            self._hold(_Op((b"PUBLISH", self._room_channel(room), data), _PUBLISH))
            return
        if len(self._queue) >= self.max_queue:
            self._fail("room publish (queue full)")
            return
        excluded = exclude.encode()
        data = b"".join((_ROOM_HEADER.pack(self._origin, len(excluded)), excluded, message))
        self.stats.room_published += 1
        self._push(_Op((b"PUBLISH", self._room_channel(room), data), _PUBLISH))

    def publish_direct(self, conn_id: str, message: bytes) -> bool:
        """Queue a direct message to a connection on another node.

        Returns ``True`` once queued: whether the connection exists is only
        known in Redis (an unknown one counts in ``frames_dropped["unknown_dst"]``).
        While Redis is unreachable the message waits in the outbox; one the
        outbox has no room for is dropped and its sender told (see
        ``outbox_bytes``), and ``True`` is returned all the same.
        """
        if not self._up or self._outbox:
            target = conn_id.encode()
            data = b"".join((_LEN.pack(len(target)), target, message))
            args = (b"EVALSHA", _DIRECT_SHA, 1, self._k_conns, target, self._p_node, data)
            if self.outbox_bytes <= 0:
                self._fail("direct message")
                return False
            self._hold(_Op(args, _DIRECT_MESSAGE))
            return True
        if len(self._queue) >= self.max_queue:
            self._fail("direct message (queue full)")
            return False
        target = conn_id.encode()
        data = b"".join((_LEN.pack(len(target)), target, message))
        self.stats.direct_published += 1
        args = (b"EVALSHA", self._shas[3], 1, self._k_conns, target, self._p_node, data)
        self._push(_Op(args, _DIRECT_MESSAGE))
        return True

    # -- the outbox ----------------------------------------------------------------

    def _hold(self, op: _Op) -> None:
        """Keep a publish for when Redis is back, or drop it past the bound."""
        if self.outbox_bytes <= 0:
            self._fail("room publish" if op.kind == _PUBLISH else "direct message")
            return
        now = time.monotonic()
        self._expire(now)
        size = op.size
        if self._outbox_size + size > self.outbox_bytes:
            self._drop(op, f"the outbox is full ({self.outbox_bytes} bytes)")
            return
        if not op.since:
            op.since = now
        self._outbox.append(op)
        self._outbox_size += size

    def _expire(self, now: float) -> None:
        """Drop what waited longer than ``outbox_seconds`` (the oldest first)."""
        outbox = self._outbox
        limit = now - self.outbox_seconds
        while outbox and outbox[0].since < limit:
            op = outbox.popleft()
            self._outbox_size -= op.size
            self._drop(op, f"it waited longer than {self.outbox_seconds:g}s")

    def _drop(self, op: _Op, why: str) -> None:
        """Count a cross-node message the outbox could not keep; tell its sender."""
        if self._server is None:
            return
        server = self._server
        server.metrics.frames_dropped["backplane_outbox"] += 1
        self._outbox_log.log(
            logging.WARNING,
            "outbox",
            "Redis backplane: cross-node message dropped while Redis is unreachable: %s",
            why,
        )
        data = op.args[-1]
        if op.kind == _PUBLISH:
            (size,) = _LEN.unpack_from(data, 16)
            message = data[_ROOM_HEADER.size + size :]
        else:
            (size,) = _LEN.unpack_from(data)
            message = data[2 + size :]
        try:
            room, event, _dst, src, _payload = decode_fields(message)
        except FrameError:  # pragma: no cover - we encoded it
            return
        if src:
            server.tell_backplane_unavailable(
                src, room, event, f"not delivered to other nodes: Redis is unreachable and {why}"
            )

    def _release_outbox(self) -> None:
        """Queue the outbox ahead of anything new (no checkpoint)."""
        self._expire(time.monotonic())
        outbox, self._outbox = self._outbox, deque()
        self._outbox_size = 0
        for op in outbox:
            if op.kind == _PUBLISH:
                self.stats.room_published += 1
            else:
                self.stats.direct_published += 1
            self._push(op)
        if outbox:
            logger.warning(
                "Redis backplane: sending %d cross-node message(s) held during the outage",
                len(outbox),
            )

    async def _await_peers_then_release(self, client: Redis[bytes]) -> None:
        """Send the outbox once the other nodes listen again, or after a bound.

        After a Redis restart every node resubscribes on its own schedule; a
        publish before a peer resubscribed would never reach it. Each node
        sets ``ready:<node>`` once its subscriptions are acknowledged and its
        membership re-registered; this waits for that key of every node known
        before the outage or registered now, at most about as long as a live
        node takes to reconnect.
        """
        if not self._outbox:
            return
        peers = set(self._peers)
        peers.update(uuid.UUID(bytes=origin).hex.encode() for origin in self._origins)
        bound = self.reconnect_max * 1.5 + self.op_timeout * 3
        with trio.move_on_after(bound):
            while True:
                with trio.fail_after(self.op_timeout):
                    peers.update(await client.smembers(self._k_nodes))
                    peers.discard(self._node)
                    if not peers:
                        break
                    ordered = sorted(peers)
                    ready = await client.mget([self._p_ready + n for n in ordered])
                if all(value is not None for value in ready):
                    break
                await trio.sleep(0.05)
        self._release_outbox()

    # -- commands ----------------------------------------------------------------

    def _join_args(self, room: str, conn_id: str) -> tuple[Any, ...]:
        room_b, cid = room.encode(), conn_id.encode()
        return (
            b"EVALSHA",
            self._shas[0],
            5,
            self._p_members + room_b,
            self._p_nodemembers + self._node,
            self._k_rooms,
            self._k_conns,
            self._p_nodeconns + self._node,
            cid,
            room_b + b"\0" + cid,
            room_b,
            self._node,
        )

    def _leave_args(
        self, room: str, conn_id: str, node: bytes, notice: bytes = b""
    ) -> tuple[Any, ...]:
        room_b, cid = room.encode(), conn_id.encode()
        return (
            b"EVALSHA",
            self._shas[1],
            3,
            self._p_members + room_b,
            self._p_nodemembers + node,
            self._k_rooms,
            cid,
            room_b + b"\0" + cid,
            room_b,
            node,
            self._p_room + room_b,
            notice,
        )

    def _unregister_args(self, conn_id: str, node: bytes) -> tuple[Any, ...]:
        return (
            b"EVALSHA",
            self._shas[2],
            2,
            self._k_conns,
            self._p_nodeconns + node,
            conn_id.encode(),
            node,
        )

    def _register_args(self, conn_id: str) -> list[tuple[Any, ...]]:
        cid = conn_id.encode()
        return [
            (b"HSET", self._k_conns, cid, self._node),
            (b"SADD", self._p_nodeconns + self._node, cid),
        ]

    def _member_left_notice(self, room: str, conn_id: str) -> bytes:
        if room == ROOT and not self.server.settings.root_notices:
            return b""
        message = encode(room, "member_left", "", "", conn_id.encode())
        return _ROOM_HEADER.pack(_SYSTEM_ORIGIN, 0) + message

    def _push(self, op: _Op) -> _Op:
        self._queue.append(op)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        return op

    def _forget_conn_room(self, conn_id: str) -> None:
        self._conn_rooms[conn_id] -= 1

    # -- subscriptions -------------------------------------------------------------

    def _subscribe(self, rooms: Iterable[str]) -> trio.Event:
        """Subscribe to the channels of ``rooms``; the event of the last one."""
        event = None
        new: list[bytes] = []
        for room in rooms:
            channel = self._room_channel(room)
            event = self._subs.get(channel)
            if event is None:
                event = self._subs[channel] = trio.Event()
                self._channel_rooms[channel] = room
                new.append(channel)
        self._send_subscription(b"SUBSCRIBE", new)
        return event if event is not None else trio.Event()

    def _unsubscribe(self, rooms: Iterable[str]) -> None:
        gone: list[bytes] = []
        for room in rooms:
            channel = self._room_channel(room)
            if self._subs.pop(channel, None) is not None:
                self._channel_rooms.pop(channel, None)
                gone.append(channel)
        self._send_subscription(b"UNSUBSCRIBE", gone)

    def _send_subscription(self, command: bytes, channels: Sequence[bytes]) -> None:
        sub = self._sub
        if sub is None or not channels:
            return
        try:
            for start in range(0, len(channels), 1000):
                sub.send_command(command, *channels[start : start + 1000])
        except Exception as exc:
            # The reader notices the broken connection and reconnects.
            logger.debug("%s failed: %r", command.decode(), exc)

    # -- connection management -------------------------------------------------------

    def _make_client(self) -> Redis[bytes]:
        return Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=self.op_timeout,
            client_name=f"trioroom:{self.node_id}",
        )

    async def _maintain(self, client: Redis[bytes]) -> None:
        """Keep a session up, reconnecting with exponential backoff and jitter."""
        delay = 0.1
        attempts = 0
        while True:
            sessions = self.stats.sessions
            try:
                await self._probe(client)
                await self._session(client)
            except Exception as exc:
                if self._server is not None and (attempts == 0 or self.stats.sessions > sessions):
                    self._server.metrics.backplane_errors += 1
                if self.stats.sessions > sessions:
                    # Connected, then lost: a state change worth a warning.
                    logger.warning(
                        "Redis backplane: lost %s (%s); serving local connections only "
                        "until it is back",
                        self.url,
                        _describe(exc),
                    )
                    attempts = 0
                elif attempts == 0:
                    logger.warning(
                        "Redis backplane: cannot reach %s (%s); serving local connections "
                        "only, retrying",
                        self.url,
                        _describe(exc),
                    )
                else:
                    logger.debug("Redis backplane: reconnect failed: %s", _describe(exc))
            finally:
                self._first_attempt.set()
            if attempts == 0:
                delay = 0.1
            attempts += 1
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.reconnect_max)

    async def _probe(self, client: Redis[bytes]) -> None:
        """Fail fast and quietly while Redis is unreachable.

        coredis logs a traceback for each refused connection; a plain socket
        connect first keeps the log readable during an outage.
        """
        location = client.connection_pool.location
        stream: trio.abc.Stream
        with trio.fail_after(self.op_timeout):
            if isinstance(location, TCPLocation):
                stream = await trio.open_tcp_stream(location.host, location.port)
            elif isinstance(location, UnixDomainSocketLocation):
                stream = await trio.open_unix_socket(location.path)
            else:  # pragma: no cover - other location kinds
                return
        await stream.aclose()

    async def _session(self, client: Redis[bytes]) -> None:
        """One connected period: register, resync, then serve until an error."""
        pool = client.connection_pool
        async with pool.acquire() as sub, pool.acquire() as pub:
            try:
                await self._run_session(client, sub, pub)
            finally:
                self._go_down()
                sub.invalidate()
                pub.invalidate()

    async def _run_session(
        self, client: Redis[bytes], sub: BaseConnection, pub: BaseConnection
    ) -> None:
        ttl_ms = int(self.node_ttl * 1000)
        with trio.fail_after(self.op_timeout):
            loaded = await pub.create_request_batch(
                [_command(b"SCRIPT", b"LOAD", script) for script in _SCRIPTS]
            )
            self._shas = [_checked(sha) for sha in loaded]
            registered = await pub.create_request_batch(
                [
                    _command(b"SET", self._p_alive + self._node, _node_label(), b"PX", ttl_ms),
                    _command(b"SADD", self._k_nodes, self._node),
                    _command(b"SMEMBERS", self._p_nodemembers + self._node),
                    _command(b"SMEMBERS", self._p_nodeconns + self._node),
                    # Not ready for held messages until resubscribed (below).
                    _command(b"DEL", self._p_ready + self._node),
                    _command(b"SMEMBERS", self._k_nodes),
                ]
            )
            for result in registered:
                _checked(result)
        remote_entries = _as_set(registered[2])
        remote_conns = _as_set(registered[3])
        self._peers.update(_as_set(registered[5]) - {self._node})
        # From here to the nursery, no checkpoint: the resync below and every
        # join or leave after it reach Redis in this order.
        self._sub = sub
        self._subs = {}
        self._channel_rooms = {}
        self._queue.clear()
        node_subscribed = self._subs[self._node_channel] = trio.Event()
        self._send_subscription(b"SUBSCRIBE", [self._node_channel])
        self._up = True
        self._resync(remote_entries, remote_conns)
        self.stats.sessions += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, sub)
            nursery.start_soon(self._publisher, pub)
            with trio.fail_after(self.op_timeout * 2):
                await node_subscribed.wait()
                for event in list(self._subs.values()):
                    await event.wait()
            if self.stats.sessions > 1:
                logger.warning(
                    "Redis backplane reconnected (node %s, %d rooms)",
                    self.node_id,
                    len(self._local),
                )
            else:
                logger.info("Redis backplane connected (node %s)", self.node_id)
            self._first_attempt.set()
            # Subscribed, and the resync is queued ahead of this: other nodes
            # may send what they held during the outage.
            self._push(_Op((b"SET", self._p_ready + self._node, b"1", b"PX", ttl_ms), _MEMBERSHIP))
            nursery.start_soon(self._await_peers_then_release, client)
            nursery.start_soon(self._heartbeat, client, sub)
            nursery.start_soon(self._sweeper, client)

    def _go_down(self) -> None:
        """Forget the connections; fail whatever still waits for them."""
        if trio.current_effective_deadline() == -math.inf:
            # Cancelled: the whole server is stopping, and connections that
            # close along with it will fail to reach Redis. Expected.
            self._closing = True
        self._up = False
        self._sub = None
        for event in self._subs.values():
            event.set()
        self._subs = {}
        self._channel_rooms = {}
        # Publishes not yet sent (or in the batch that failed) go back to the
        # outbox, ahead of what it holds already; membership is resynced.
        held = [op for op in self._queue if op.kind != _MEMBERSHIP]
        while self._queue:
            op = self._queue.popleft()
            op.failed = True
            if op.event is not None:
                op.event.set()
        if held and not self._closing:
            held.extend(self._outbox)
            self._outbox = deque()
            self._outbox_size = 0
            for op in held:
                self._hold(op)

    def _resync(self, remote_entries: set[bytes], remote_conns: set[bytes]) -> None:
        """Make Redis and the subscriptions match local membership (no checkpoint).

        ``remote_entries`` (``room\\0conn``) and ``remote_conns`` were read
        from Redis before; every operation issued here goes through the
        ordered queue, ahead of any join or leave that follows.
        """
        server = self.server
        # Memberships the server no longer has (a leave that timed out, a
        # join cancelled after it was registered) are dropped, once seen on
        # two reconciles in a row: a join in progress is registered here
        # before the server adds the member.
        actual = server.local_rooms_of()
        stale: set[tuple[str, str]] = set()
        for room, members in self._local.items():
            present = actual.get(room, ())
            stale.update((room, conn_id) for conn_id in members.difference(present))
        for room, conn_id in stale & self._stale:
            members = self._local[room]
            members.discard(conn_id)
            self._forget_conn_room(conn_id)
            if not members:
                del self._local[room]
        self._stale = stale - self._stale
        entries: dict[bytes, tuple[str, str]] = {}
        for room, members in self._local.items():
            room_b = room.encode()
            for conn_id in members:
                entries[room_b + b"\0" + conn_id.encode()] = (room, conn_id)
        for entry in remote_entries.difference(entries):
            room_b, _, cid = entry.partition(b"\0")
            self._push(
                _Op(self._leave_args(room_b.decode(), cid.decode(), self._node), _MEMBERSHIP)
            )
        for entry in set(entries).difference(remote_entries):
            self._push(_Op(self._join_args(*entries[entry]), _MEMBERSHIP))
        for conn_id in [c for c, n in self._conn_rooms.items() if n <= 0]:
            del self._conn_rooms[conn_id]
        conns = {c.id.encode() for c in server.connections}
        conns.update(cid.encode() for cid in self._conn_rooms)
        for cid in remote_conns.difference(conns):
            self._push(_Op(self._unregister_args(cid.decode(), self._node), _MEMBERSHIP))
        for cid in conns.difference(remote_conns):
            for args in self._register_args(cid.decode()):
                self._push(_Op(args, _MEMBERSHIP))
        wanted = set(self._local)
        subscribed = set(self._channel_rooms.values())
        self._unsubscribe(subscribed - wanted)
        self._subscribe(wanted - subscribed)

    # -- tasks of a session -------------------------------------------------------------

    async def _reader(self, sub: BaseConnection) -> None:
        """Deliver what arrives on the subscriber connection."""
        server = self.server
        stats = self.stats
        node_channel = self._node_channel
        origin = self._origin
        channel_rooms = self._channel_rooms
        header = _ROOM_HEADER.size
        origins = self._origins
        last_origin = origin
        async for push in sub.push_messages:
            kind = push[0]
            if kind == b"message":
                channel: Any = push[1]
                data: Any = push[2]
                try:
                    if channel == node_channel:
                        stats.direct_received += 1
                        (size,) = _LEN.unpack_from(data)
                        target = data[2 : 2 + size].decode()
                        server.deliver_direct_from_backplane(target, data[2 + size :])
                        continue
                    room = channel_rooms.get(channel)
                    if room is None:
                        continue
                    if data.startswith(origin):
                        stats.echoes += 1
                        continue
                    if not data.startswith(last_origin):
                        last_origin = data[:16]
                        if last_origin != _SYSTEM_ORIGIN:
                            origins.add(last_origin)
                    stats.room_received += 1
                    (size,) = _LEN.unpack_from(data, 16)
                    exclude = data[header : header + size].decode() if size else ""
                    server.deliver_room_from_backplane(room, data[header + size :], exclude)
                except (struct.error, UnicodeDecodeError, TypeError, AttributeError) as exc:
                    self._fail(f"malformed message on {channel!r} ({exc})")
            elif kind == b"subscribe":
                event = self._subs.get(push[1])  # type: ignore[arg-type]
                if event is not None:
                    event.set()

    async def _publisher(self, pub: BaseConnection) -> None:
        """Drain the queue in order, one pipelined write per batch."""
        queue = self._queue
        stats = self.stats
        metrics = self.server.metrics
        while True:
            if not queue:
                wake = self._wake = trio.Event()
                await wake.wait()
                continue
            count = min(len(queue), self.max_batch)
            ops = [queue.popleft() for _ in range(count)]
            try:
                results = await pub.create_request_batch(
                    [_command(*op.args) for op in ops], timeout=self.op_timeout
                )
            except BaseException:
                # Maybe sent, maybe not: back to the queue, which the outbox
                # takes over (at least once: a message Redis did run before
                # the connection broke goes again).
                queue.extendleft(reversed(ops))
                raise
            stats.batches += 1
            stats.commands += count
            fatal: BaseException | None = None
            failed = 0
            retry: list[_Op] = []
            for op, result in zip(ops, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, (RedisConnectionError, TimeoutError, NoScriptError)):
                        fatal = fatal or result
                        if op.kind != _MEMBERSHIP:
                            retry.append(op)  # to the outbox, via the queue
                            continue
                    else:
                        logger.debug("Redis command failed: %r", result)
                    op.failed = True
                    if op.kind != _MEMBERSHIP:
                        failed += 1
                elif op.kind == _DIRECT_MESSAGE and isinstance(result, int) and result <= 0:
                    metrics.frames_dropped["unknown_dst"] += 1
                if op.event is not None:
                    op.event.set()
            if failed:
                self._fail("cross-node send", failed)
            if fatal is not None:
                queue.extendleft(reversed(retry))
                raise fatal

    async def _heartbeat(self, client: Redis[bytes], sub: BaseConnection) -> None:
        """Refresh the liveness key, check both connections, reconcile now and then."""
        ttl_ms = int(self.node_ttl * 1000)
        interval = self.node_ttl / 3
        next_reconcile = time.monotonic() + self.reconcile_interval
        while True:
            await trio.sleep(interval)
            with trio.fail_after(max(self.op_timeout, interval)):
                alive = await client.set(
                    self._p_alive + self._node, _node_label(), px=ttl_ms, condition=PureToken.XX
                )
                await client.set(
                    self._p_ready + self._node, b"1", px=ttl_ms, condition=PureToken.XX
                )
                # The nodes whose subscriptions gate the outbox after an outage.
                nodes = await client.smembers(self._k_nodes)
                await sub.create_request(b"PING")
            self._peers = {n for n in nodes if n != self._node}
            self._origins.clear()  # registered nodes are in the peers now
            if not alive:
                raise _StateLost("this node's state vanished from Redis; registering again")
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self.reconcile_interval
                await self._reconcile(client)

    async def _reconcile(self, client: Redis[bytes]) -> None:
        with trio.fail_after(self.op_timeout):
            entries = await client.smembers(self._p_nodemembers + self._node)
            conns = await client.smembers(self._p_nodeconns + self._node)
        self._resync(set(entries), set(conns))

    async def _sweeper(self, client: Redis[bytes]) -> None:
        """Find nodes whose liveness key expired and remove their members."""
        while True:
            await trio.sleep(self.node_ttl / 2 * random.uniform(0.8, 1.2))
            with trio.fail_after(self.op_timeout):
                nodes = await client.smembers(self._k_nodes)
                others = sorted(n for n in nodes if n != self._node)
                if not others:
                    self._peers = set()
                    continue
                alive = await client.mget([self._p_alive + n for n in others])
            self._peers = {n for n, v in zip(others, alive, strict=True) if v is not None}
            for node, value in zip(others, alive, strict=True):
                if value is None:
                    await self._sweep(client, node)

    async def _sweep(self, client: Redis[bytes], node: bytes) -> None:
        """Remove a dead node's members, telling the rooms (one sweeper per node)."""
        with trio.fail_after(self.op_timeout):
            locked = await client.set(
                self._p_sweep + node,
                self._node,
                condition=PureToken.NX,
                px=int(max(30.0, self.node_ttl * 3) * 1000),
            )
            if not locked:
                return
            entries = await client.smembers(self._p_nodemembers + node)
            conns = await client.smembers(self._p_nodeconns + node)
        logger.warning(
            "Redis backplane: node %s stopped refreshing its liveness key; removing its "
            "%d memberships and %d connections",
            node.decode(errors="replace"),
            len(entries),
            len(conns),
        )
        last = None
        for args in self._sweep_commands(node, entries, conns, notices=True):
            last = self._push(_Op(args, _MEMBERSHIP, wait=True))
        if last is not None and last.event is not None:
            with trio.fail_after(max(self.op_timeout, 10.0)):
                await last.event.wait()
        self.stats.nodes_swept += 1
        self.stats.members_swept += len(entries)

    def _sweep_commands(
        self, node: bytes, entries: Iterable[bytes], conns: Iterable[bytes], *, notices: bool
    ) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        for entry in entries:
            room_b, _, cid = entry.partition(b"\0")
            room, conn_id = room_b.decode(errors="replace"), cid.decode(errors="replace")
            notice = self._member_left_notice(room, conn_id) if notices else b""
            commands.append(self._leave_args(room, conn_id, node, notice))
        for cid in conns:
            commands.append(self._unregister_args(cid.decode(errors="replace"), node))
        commands.append((b"SREM", self._k_nodes, node))
        commands.append(
            (
                b"DEL",
                self._p_nodemembers + node,
                self._p_nodeconns + node,
                self._p_alive + node,
                self._p_ready + node,
            )
        )
        return commands

    async def _deregister(self) -> None:
        """On exit: remove this node and whatever members it still has in Redis.

        The caller's scope is cancelled, so this uses a client of its own
        inside a shielded scope.
        """
        try:
            async with self._make_client() as client:
                entries = await client.smembers(self._p_nodemembers + self._node)
                conns = await client.smembers(self._p_nodeconns + self._node)
                commands = self._sweep_commands(self._node, entries, conns, notices=True)
                async with client.connection_pool.acquire() as conn:
                    if entries or conns:
                        await conn.create_request_batch(
                            [_command(b"SCRIPT", b"LOAD", s) for s in _SCRIPTS]
                        )
                    await conn.create_request_batch([_command(*args) for args in commands])
        except Exception as exc:
            logger.info("Redis backplane: could not deregister node %s: %r", self.node_id, exc)


def _command(*args: Any) -> CommandRequest[Any]:
    return CommandRequest(args[0], *args[1:], execution_parameters={})


def _checked(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


def _as_set(result: Any) -> set[bytes]:
    if isinstance(result, (set, list, tuple)):
        return {bytes(item) for item in result}
    return set()


def _node_label() -> bytes:
    return f"{socket.gethostname()}:{os.getpid()}".encode()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
