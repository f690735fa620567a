"""The Redis backplane's coordinator: the Backplane seam and the session loop."""

from __future__ import annotations

import itertools
import logging
import math
import time
import urllib.parse
import uuid
from functools import partial

import trio
from coredis import Redis
from coredis.connection import BaseConnection

from ...log import BoundedLog
from ..base import Adopt, Backplane, HandoverFailed, MovedSession, Node
from .egress import DIRECT_MESSAGE, MEMBERSHIP, PUBLISH, Op, Publisher
from .handover import Handovers
from .ingress import Ingress
from .keys import Keys
from .liveness import Liveness
from .membership import Commands, LocalMembership
from .outbox import Outbox, tell_sender
from .reconnect import keep_session
from .stats import RedisStats
from .wire import encode_direct, encode_room

__all__ = ["RedisBackplane"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")


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

        node_id = self.node_id.encode()
        origin = uuid.UUID(self.node_id).bytes
        self._keys = keys = Keys(prefix)
        self._origin = origin
        # Numbers messages in publisher queue order: see wire.Sequences.
        self._sequence = itertools.count(1)
        self._commands = Commands(keys, node_id)
        # Local membership as last told to Redis.
        self._local = LocalMembership()
        self._publisher = Publisher(
            self.stats, self._fail, max_batch=max_batch, op_timeout=op_timeout
        )
        self._outbox = Outbox(outbox_bytes, outbox_seconds, self._dropped)
        self._liveness = Liveness(
            keys,
            self._commands,
            self._publisher,
            self.stats,
            node_ttl=node_ttl,
            op_timeout=op_timeout,
            reconnect_max=reconnect_max,
        )
        self._ingress = Ingress(
            keys,
            node_channel=keys.node_channel(node_id),
            origin=origin,
            origins=self._liveness.origins,
            sequences=self._liveness.sequences,
            stats=self.stats,
            fail=self._fail,
        )
        self._handovers = Handovers(
            self._commands,
            self._publisher,
            self._ingress,
            self._local,
            lambda: self._up,
            op_timeout=op_timeout,
        )
        self._node: Node | None = None
        self._client: Redis[bytes] | None = None
        self._up = False
        self._first_attempt = trio.Event()
        self._outbox_log = BoundedLog(logger)
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
    def node(self) -> Node:
        """The server this backplane runs for (set by :meth:`run`)."""
        if self._node is None:
            raise RuntimeError("the backplane is not running")
        return self._node

    def _fail(self, what: str, count: int = 1) -> None:
        """Count failed cross-node operations; warn at most every 5 seconds."""
        if self._node is not None:
            self._node.metrics.backplane_errors += count
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
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, keep connected, and clean up this node's state on exit.

        Signals readiness once the first connection attempt succeeded (or
        failed: the server then starts without Redis and the backplane keeps
        trying in the background).
        """
        if self._node is not None:
            raise RuntimeError("a RedisBackplane serves one server, once")
        self._node = self._handovers.node = node
        self._liveness.session_window = node.settings.resume_window
        client = self._make_client()
        try:
            async with client:
                self._client = client
                async with trio.open_nursery() as nursery:
                    self._handovers.nursery = nursery
                    nursery.start_soon(
                        partial(
                            keep_session,
                            client,
                            self._session,
                            url=self.url,
                            stats=self.stats,
                            metrics=node.metrics,
                            attempted=self._first_attempt,
                            op_timeout=self.op_timeout,
                            reconnect_max=self.reconnect_max,
                        )
                    )
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
        self._local.add(room, conn_id)
        if not self._up:
            self._fail("join")
            return
        subscribed = self._ingress.subscribe([room])
        op = self._publisher.push(Op(self._commands.join(room, conn_id), MEMBERSHIP, wait=True))
        assert op.event is not None
        with trio.move_on_after(self.op_timeout) as scope:
            await subscribed.wait()
            await op.event.wait()
        if scope.cancelled_caught or op.failed or not self._up:
            self._fail("join")

    async def left(self, room: str, conn_id: str) -> None:
        local = self._local
        emptied = local.remove(room, conn_id)
        gone = local.in_no_room(conn_id) and not self.node.has_connection(conn_id)
        if gone:
            local.forget(conn_id)
        if not self._up:
            self._fail("leave")
            return
        if emptied:
            self._ingress.unsubscribe([room])
        commands, push = self._commands, self._publisher.push
        op = push(Op(commands.leave(room, conn_id, commands.node_id), MEMBERSHIP, wait=True))
        if gone:
            op = push(Op(commands.unregister(conn_id, commands.node_id), MEMBERSHIP, wait=True))
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
        key = self._keys.members(room)
        items: dict[bytes, bytes] | None = None
        with trio.move_on_after(self.op_timeout):
            try:
                if limit is None:
                    items = await client.hgetall(key)
                else:
                    # A sample is enough for a capped list (the root room):
                    # never read a whole large room for it.
                    count = limit + min(self._local.count(room), 4 * limit + 64)
                    items = await client.hrandfield(key, count=count, withvalues=True) or {}
            except Exception as exc:
                logger.debug("member list of %r failed: %r", room, exc)
        if items is None:
            self._fail("member list")
            return []
        node_id = self._commands.node_id
        ids = [field.decode() for field, owner in items.items() if owner != node_id]
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
                counts = await client.hgetall(self._keys.rooms)
            except Exception as exc:
                logger.debug("room list failed: %r", exc)
        if counts is None:
            self._fail("room list")
            return []
        names = []
        for raw, count in counts.items():
            name = raw.decode()
            if int(count) > self._local.count(name):
                names.append(name)
        return names

    def publish_room(self, room: str, message: bytes, exclude: str) -> None:
        if not self._up or self._outbox.held:
            # Down, or back but the outbox has not gone out yet: it keeps the order.
            data = encode_room(self._origin, next(self._sequence), exclude, message)
            self._hold(Op((b"PUBLISH", self._keys.room_channel(room), data), PUBLISH))
            return
        if len(self._publisher.queue) >= self.max_queue:
            self._fail("room publish (queue full)")
            return
        data = encode_room(self._origin, next(self._sequence), exclude, message)
        self.stats.room_published += 1
        self._publisher.push(Op((b"PUBLISH", self._keys.room_channel(room), data), PUBLISH))

    def publish_direct(self, conn_id: str, message: bytes) -> bool:
        """Queue a direct message to a connection on another node.

        Returns ``True`` once queued: whether the connection exists is only
        known in Redis (an unknown one counts in ``frames_dropped["unknown_dst"]``).
        While Redis is unreachable the message waits in the outbox; one the
        outbox has no room for is dropped and its sender told (see
        ``outbox_bytes``), and ``True`` is returned all the same.
        """
        if not self._up or self._outbox.held:
            if self.outbox_bytes <= 0:
                self._fail("direct message")
                return False
            envelope = encode_direct(conn_id, self._origin, next(self._sequence), message)
            self._hold(Op(self._commands.direct(conn_id, envelope, held=True), DIRECT_MESSAGE))
            return True
        if len(self._publisher.queue) >= self.max_queue:
            self._fail("direct message (queue full)")
            return False
        envelope = encode_direct(conn_id, self._origin, next(self._sequence), message)
        self.stats.direct_published += 1
        self._publisher.push(Op(self._commands.direct(conn_id, envelope), DIRECT_MESSAGE))
        return True

    def session_opened(self, token: str, conn_id: str) -> None:
        self._handovers.opened(token, conn_id)

    def session_closed(self, token: str) -> None:
        self._handovers.closed(token)

    async def take_session(
        self, token: str, digest: str, last: int, adopt: Adopt
    ) -> MovedSession | HandoverFailed:
        return await self._handovers.take(token, digest, last, adopt)

    # -- the outbox ----------------------------------------------------------------

    def _hold(self, op: Op) -> None:
        """Keep a publish for when Redis is back, or drop it past the bound."""
        if self.outbox_bytes <= 0:
            self._fail("room publish" if op.kind == PUBLISH else "direct message")
            return
        self._outbox.hold(op, time.monotonic())

    def _dropped(self, op: Op, why: str) -> None:
        """Count a cross-node message the outbox could not keep; tell its sender."""
        node = self._node
        if node is None:
            return
        node.metrics.frames_dropped["backplane_outbox"] += 1
        self._outbox_log.log(
            logging.WARNING,
            "outbox",
            "Redis backplane: cross-node message dropped while Redis is unreachable: %s",
            why,
        )
        tell_sender(node, op, why)

    def _release_outbox(self) -> None:
        """Queue the outbox ahead of anything new (no checkpoint)."""
        held = self._outbox.release(time.monotonic())
        for op in held:
            if op.kind == PUBLISH:
                self.stats.room_published += 1
            else:
                self.stats.direct_published += 1
            self._publisher.push(op)
        if held:
            logger.warning(
                "Redis backplane: sending %d cross-node message(s) held during the outage",
                len(held),
            )

    async def _release_outbox_once_peers_listen(self, client: Redis[bytes]) -> None:
        """Send the outbox once the other nodes listen again (see :class:`Liveness`)."""
        if not self._outbox.held:
            return
        await self._liveness.wait_for_peers(client)
        self._release_outbox()

    # -- connection management -------------------------------------------------------

    def _make_client(self) -> Redis[bytes]:
        return Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=self.op_timeout,
            client_name=f"trioroom:{self.node_id}",
        )

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
        node = self.node
        liveness = self._liveness
        remote_entries, remote_conns = await liveness.register(pub)
        # From here to the nursery, no checkpoint: the resync below and every
        # join or leave after it reach Redis in this order.
        self._publisher.queue.clear()
        node_subscribed = self._ingress.start(sub)
        self._up = True
        self._resync(remote_entries, remote_conns)
        self._handovers.register_all()
        self.stats.sessions += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ingress.read, sub, node)
            nursery.start_soon(self._publisher.run, pub, node.metrics)
            with trio.fail_after(self.op_timeout * 2):
                await node_subscribed.wait()
                for event in list(self._ingress.acks.values()):
                    await event.wait()
            if self.stats.sessions > 1:
                logger.warning(
                    "Redis backplane reconnected (node %s, %d rooms)",
                    self.node_id,
                    len(self._local.rooms),
                )
            else:
                logger.info("Redis backplane connected (node %s)", self.node_id)
            self._first_attempt.set()
            # Subscribed, and the resync is queued ahead of this: other nodes
            # may send what they held during the outage.
            self._publisher.push(liveness.ready_op())
            nursery.start_soon(self._release_outbox_once_peers_listen, client)
            nursery.start_soon(
                liveness.heartbeat, client, sub, self._reconcile, self.reconcile_interval
            )
            nursery.start_soon(self._sweeper, client)

    def _go_down(self) -> None:
        """Forget the connections; fail whatever still waits for them."""
        if trio.current_effective_deadline() == -math.inf:
            # Cancelled: the whole server is stopping, and connections that
            # close along with it will fail to reach Redis. Expected.
            self._closing = True
        self._up = False
        self._ingress.stop()
        # Publishes not yet sent (or in the batch that failed) go back to the
        # outbox, ahead of what it holds already; membership is resynced.
        unsent = self._publisher.fail_all()
        if unsent and not self._closing:
            for op in unsent + self._outbox.drain():
                self._hold(op)

    def _resync(self, remote_entries: set[bytes], remote_conns: set[bytes]) -> None:
        """Make Redis and the subscriptions match local membership (no checkpoint).

        ``remote_entries`` (``room\\0conn``) and ``remote_conns`` were read
        from Redis before; every operation issued here goes through the
        ordered queue, ahead of any join or leave that follows.
        """
        node = self.node
        repair = self._local.repair(
            node.local_rooms_of(), node.connection_ids(), remote_entries, remote_conns
        )
        for args in self._commands.repair(repair):
            self._publisher.push(Op(args, MEMBERSHIP))
        wanted = set(self._local.rooms)
        subscribed = self._ingress.rooms()
        self._ingress.unsubscribe(subscribed - wanted)
        self._ingress.subscribe(wanted - subscribed)

    async def _reconcile(self, client: Redis[bytes]) -> None:
        if self._handovers.busy:
            return  # a session moving in or out is registered on both nodes for a moment
        keys, node_id = self._keys, self._commands.node_id
        with trio.fail_after(self.op_timeout):
            entries = await client.smembers(keys.nodemembers(node_id))
            conns = await client.smembers(keys.nodeconns(node_id))
        self._resync(set(entries), set(conns))

    async def _sweeper(self, client: Redis[bytes]) -> None:
        await self._liveness.sweeper(client, root_notices=self.node.settings.root_notices)

    async def _deregister(self) -> None:
        """On exit: remove this node and whatever members it still has in Redis.

        The caller's scope is cancelled, so this uses a client of its own
        inside a shielded scope.
        """
        try:
            async with self._make_client() as client:
                await self._liveness.deregister(
                    client, root_notices=self.node.settings.root_notices
                )
        except Exception as exc:
            logger.info("Redis backplane: could not deregister node %s: %r", self.node_id, exc)
