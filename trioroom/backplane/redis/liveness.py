"""Which nodes are alive: this node's registration, heartbeat and cleanup, and
the sweep of nodes that stopped refreshing their liveness key.

Each node refreshes ``alive:<node>`` with a TTL; the other nodes remove the
members of a node whose key expired, sending ``member_left`` for them. A node
sets ``ready:<node>`` once it listens again after a (re)connection; the others
wait for it before sending what they held during an outage.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from coredis import PureToken, Redis
from coredis.connection import BaseConnection

from .egress import MEMBERSHIP, Op, Publisher, command
from .keys import Keys
from .membership import SCRIPTS, Commands
from .stats import RedisStats
from .wire import Sequences

__all__ = ["Liveness", "StateLost"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")


class StateLost(Exception):
    """Redis no longer has this node's liveness key (restart, flush or sweep)."""


class Liveness:
    """This node's presence in Redis, and the other nodes'.

    Args:
        keys: Names of the keys.
        commands: Builds membership commands (for registration and sweeps).
        publisher: The ordered queue sweeps go through.
        stats: Counts sweeps.
        node_ttl: Lifetime of the liveness key, refreshed every third of it.
        op_timeout: Bound on each Redis operation.
        reconnect_max: Longest pause between reconnection attempts (of every node).
    """

    def __init__(
        self,
        keys: Keys,
        commands: Commands,
        publisher: Publisher,
        stats: RedisStats,
        *,
        node_ttl: float,
        op_timeout: float,
        reconnect_max: float,
    ) -> None:
        self.keys = keys
        self.commands = commands
        self.publisher = publisher
        self.stats = stats
        self.node_ttl = node_ttl
        self.op_timeout = op_timeout
        self.reconnect_max = reconnect_max
        #: This node's ID.
        self.node_id = commands.node_id
        #: Other nodes seen alive (their subscriptions gate the outbox on return).
        self.peers: set[bytes] = set()
        #: Origins of room messages received (nodes sharing rooms with this one).
        self.origins: set[bytes] = set()
        #: The newest sequence number received from each node; a node that is
        #: no longer registered is forgotten at the next heartbeat.
        self.sequences = Sequences()
        #: How long a swept node's session records stay (its clients then learn
        #: that the node is gone: ``node_lost``).
        self.session_window = 0.0

    @property
    def ttl_ms(self) -> int:
        """Lifetime of the liveness and ready keys, in milliseconds."""
        return int(self.node_ttl * 1000)

    async def register(self, pub: BaseConnection) -> tuple[set[bytes], set[bytes]]:
        """Load the scripts, register this node, and read what Redis holds of it.

        Returns this node's memberships (``room\\0conn``) and connections in
        Redis. ``ready:<node>`` is removed until :meth:`ready_op` runs.
        """
        node, keys = self.node_id, self.keys
        with trio.fail_after(self.op_timeout):
            loaded = await pub.create_request_batch(
                [command(b"SCRIPT", b"LOAD", script) for script in SCRIPTS]
            )
            self.commands.shas = [_checked(sha) for sha in loaded]
            registered = await pub.create_request_batch(
                [
                    command(b"SET", keys.alive(node), _node_label(), b"PX", self.ttl_ms),
                    command(b"SADD", keys.nodes, node),
                    command(b"SMEMBERS", keys.nodemembers(node)),
                    command(b"SMEMBERS", keys.nodeconns(node)),
                    # Not ready for held messages until resubscribed.
                    command(b"DEL", keys.ready(node)),
                    command(b"SMEMBERS", keys.nodes),
                ]
            )
            for result in registered:
                _checked(result)
        self.peers.update(_as_set(registered[5]) - {node})
        return _as_set(registered[2]), _as_set(registered[3])

    def ready_op(self) -> Op:
        """The command telling other nodes this one listens again."""
        args = (b"SET", self.keys.ready(self.node_id), b"1", b"PX", self.ttl_ms)
        return Op(args, MEMBERSHIP)

    async def wait_for_peers(self, client: Redis[bytes]) -> None:
        """Return once the other nodes listen again, or after a bound.

        After a Redis restart every node resubscribes on its own schedule; a
        publish before a peer resubscribed would never reach it. This waits
        for ``ready:<node>`` of every node known before the outage or
        registered now, at most about as long as a live node takes to
        reconnect.
        """
        keys = self.keys
        peers = set(self.peers)
        peers.update(uuid.UUID(bytes=origin).hex.encode() for origin in self.origins)
        bound = self.reconnect_max * 1.5 + self.op_timeout * 3
        with trio.move_on_after(bound):
            while True:
                with trio.fail_after(self.op_timeout):
                    peers.update(await client.smembers(keys.nodes))
                    peers.discard(self.node_id)
                    if not peers:
                        break
                    ordered = sorted(peers)
                    ready = await client.mget([keys.ready(n) for n in ordered])
                if all(value is not None for value in ready):
                    break
                await trio.sleep(0.05)

    async def heartbeat(
        self,
        client: Redis[bytes],
        sub: BaseConnection,
        reconcile: Callable[[Redis[bytes]], Awaitable[None]],
        reconcile_interval: float,
    ) -> None:
        """Refresh the liveness key, check both connections, reconcile now and then.

        Raises :class:`StateLost` when the liveness key is gone.
        """
        keys, node = self.keys, self.node_id
        ttl_ms = self.ttl_ms
        interval = self.node_ttl / 3
        next_reconcile = time.monotonic() + reconcile_interval
        while True:
            await trio.sleep(interval)
            with trio.fail_after(max(self.op_timeout, interval)):
                alive = await client.set(
                    keys.alive(node), _node_label(), px=ttl_ms, condition=PureToken.XX
                )
                await client.set(keys.ready(node), b"1", px=ttl_ms, condition=PureToken.XX)
                # The nodes whose subscriptions gate the outbox after an outage.
                nodes = await client.smembers(keys.nodes)
                await sub.create_request(b"PING")
            self.peers = {n for n in nodes if n != node}
            self.origins.clear()  # registered nodes are in the peers now
            self.sequences.keep_only(_origins_of(nodes))
            if not alive:
                raise StateLost("this node's state vanished from Redis; registering again")
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + reconcile_interval
                await reconcile(client)

    async def sweeper(self, client: Redis[bytes], *, root_notices: bool) -> None:
        """Find nodes whose liveness key expired and remove their members."""
        keys = self.keys
        while True:
            await trio.sleep(self.node_ttl / 2 * random.uniform(0.8, 1.2))
            with trio.fail_after(self.op_timeout):
                nodes = await client.smembers(keys.nodes)
                others = sorted(n for n in nodes if n != self.node_id)
                if not others:
                    self.peers = set()
                    continue
                alive = await client.mget([keys.alive(n) for n in others])
            self.peers = {n for n, v in zip(others, alive, strict=True) if v is not None}
            for node, value in zip(others, alive, strict=True):
                if value is None:
                    await self.sweep(client, node, root_notices=root_notices)

    async def sweep(self, client: Redis[bytes], node: bytes, *, root_notices: bool) -> None:
        """Remove a dead node's members, telling the rooms (one sweeper per node)."""
        keys = self.keys
        with trio.fail_after(self.op_timeout):
            locked = await client.set(
                keys.sweep(node),
                self.node_id,
                condition=PureToken.NX,
                px=int(max(30.0, self.node_ttl * 3) * 1000),
            )
            if not locked:
                return
            entries = await client.smembers(keys.nodemembers(node))
            conns = await client.smembers(keys.nodeconns(node))
            sessions = await client.smembers(keys.nodesessions(node))
        logger.warning(
            "Redis backplane: node %s stopped refreshing its liveness key; removing its "
            "%d memberships and %d connections",
            node.decode(errors="replace"),
            len(entries),
            len(conns),
        )
        last = None
        commands = self.commands.remove_node(
            node,
            entries,
            conns,
            root_notices=root_notices,
            sessions=sessions,
            session_ttl_ms=int(self.session_window * 1000),
        )
        for args in commands:
            last = self.publisher.push(Op(args, MEMBERSHIP, wait=True))
        if last is not None and last.event is not None:
            with trio.fail_after(max(self.op_timeout, 10.0)):
                await last.event.wait()
        self.stats.nodes_swept += 1
        self.stats.members_swept += len(entries)

    async def deregister(self, client: Redis[bytes], *, root_notices: bool) -> None:
        """On exit: remove this node and whatever members it still has in Redis.

        ``client`` is a client of its own: the session's are gone. Members
        left get ``member_left`` like those of a dead node.
        """
        keys, node = self.keys, self.node_id
        entries = await client.smembers(keys.nodemembers(node))
        conns = await client.smembers(keys.nodeconns(node))
        sessions = await client.smembers(keys.nodesessions(node))
        commands = self.commands.remove_node(
            node,
            entries,
            conns,
            root_notices=root_notices,
            sessions=sessions,
            session_ttl_ms=int(self.session_window * 1000),
        )
        async with client.connection_pool.acquire() as conn:
            if entries or conns:
                await conn.create_request_batch(
                    [command(b"SCRIPT", b"LOAD", script) for script in SCRIPTS]
                )
            await conn.create_request_batch([command(*args) for args in commands])


def _origins_of(nodes: set[bytes]) -> set[bytes]:
    """The origins (16-byte IDs in messages) of registered node IDs (hex)."""
    origins = set()
    for node in nodes:
        try:
            origins.add(bytes.fromhex(node.decode()))
        except (UnicodeDecodeError, ValueError):
            pass  # not a node of ours: nothing to keep
    return origins


def _checked(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


def _as_set(result: Any) -> set[bytes]:
    if isinstance(result, (set, list, tuple)):
        return {bytes(item) for item in result}
    return set()


def _node_label() -> bytes:
    """Value of the liveness key: where the node runs (for operators)."""
    return f"{socket.gethostname()}:{os.getpid()}".encode()
