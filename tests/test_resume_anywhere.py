"""Resuming a ``trioroom.v1`` session on any node of a cluster (issue 17, items 1 and 2).

A session dropped without a close frame resumes on whichever node its client
reaches next: same ID, same rooms, every frame once and in order, and the
other members see nothing. When the node that held it died, the client is
told ``node_lost`` at once.

In-process tests run nodes as Servers sharing a Redis (fixtures of
``test_redis``); the must-show tests run real ``trioroom serve`` processes:
``--workers 2``, two processes on two ports, and a SIGKILL.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from typing import Any

import pytest
import trio

from trioroom import Message
from trioroom.backplane.redis.keys import token_hash
from trioroom.extension import UNNUMBERED

from . import test_redis
from .test_redis import (
    StartCluster,
    eventually,
    settle,
)
from .wire import RawClient

# The Redis fixtures of test_redis: a throwaway redis-server, a key prefix, nodes.
redis_server = test_redis.redis_server
prefix = test_redis.prefix
redis = test_redis.redis
start_cluster = test_redis.start_cluster

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)

V1 = ["trioroom.v1"]
#: Queues and replay buffers that hold what the senders send while a session moves.
ROOMY: dict[str, Any] = {
    "queue_frames": 100_000,
    "queue_bytes": 64 * 1024 * 1024,
    "resume_buffer_frames": 100_000,
    "resume_buffer_bytes": 64 * 1024 * 1024,
}


class Session:
    """An extended raw client: counts numbered frames, drops its socket, resumes."""

    def __init__(self, raw: RawClient, token: str, conn_id: str) -> None:
        self.raw = raw
        self.token = token
        self.id = conn_id
        self.received = 0

    @classmethod
    async def open(cls, address: tuple[str, int]) -> Session:
        raw = await RawClient.connect(address, subprotocols=V1, read_root_ack=False)
        hello = await raw.recv()
        assert hello.event == "trioroom.session", hello
        body = json.loads(hello.payload)
        session = cls(raw, body["token"], body["id"])
        ack = await session.recv()
        assert (ack.event, ack.src) == ("join_ack", session.id)
        raw.id = session.id
        return session

    async def recv(self) -> Message:
        msg = await self.raw.recv()
        if msg.event not in UNNUMBERED:
            self.received += 1
        return msg

    async def join(self, room: str) -> None:
        await self.raw.send(Message(room, "join"))
        while (await self.recv()).event != "join_ack":
            pass

    def drop(self) -> None:
        """The TCP connection goes without a close frame (RST)."""
        self.raw.reset()

    async def resume(self, address: tuple[str, int]) -> Message:
        """Reconnect with the token: the first frame (``trioroom.resumed`` or ``not_resumed``)."""
        self.raw = await RawClient.connect(
            address,
            path=f"/ws?resume={self.token}&last={self.received}",
            subprotocols=V1,
            read_root_ack=False,
        )
        self.raw.id = self.id
        return await self.raw.recv()


class Tally:
    """What each receiver got of each numbered stream: every number once, in order."""

    def __init__(self) -> None:
        self.got: dict[tuple[str, str], list[int]] = defaultdict(list)

    def take(self, receiver: str, msg: Message) -> None:
        if msg.event in ("n", "d"):
            stream, _, number = msg.payload.decode().rpartition(":")
            self.got[(receiver, f"{msg.event}/{stream}")].append(int(number))

    def count(self, receiver: str, stream: str) -> int:
        return len(self.got[(receiver, stream)])


async def read_into(session: Session, tally: Tally, until: trio.Event | None = None) -> None:
    """Read ``session`` into ``tally`` until its socket breaks (or ``until`` is set)."""
    try:
        while until is None or not until.is_set():
            tally.take(session.id, await session.recv())
    except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


# -- in-process nodes ---------------------------------------------------------------------


async def test_a_session_resumes_on_another_node_with_every_frame_once_in_order(
    start_cluster: StartCluster, redis: Any, prefix: str
) -> None:
    n0, n1, n2 = await start_cluster(root_notices=False, **ROOMY)
    moved = await Session.open(n0.address)
    await moved.join("lobby")
    # Senders on the old node, the new node and a third one, and a watcher.
    senders = {"old": await n0.connect(), "new": await n1.connect(), "far": await n2.connect()}
    watcher = await n2.connect()
    for client in [*senders.values(), watcher]:
        await client.join("lobby")
        assert (await moved.recv()).event == "new_member"
    for sender in senders.values():
        await settle(sender, watcher)
    owner = await redis.get(f"{prefix}:session:{token_hash(moved.token).decode()}")
    assert owner == n0.backplane.node_id + moved.id
    total = 1000
    tally = Tally()
    started = trio.Event()

    async def send(tag: str, sender: RawClient) -> None:
        # Throughout the drop and the move, without pause.
        for i in range(total):
            await sender.send(Message("lobby", "n", "", "", f"{tag}:{i}"))
            await sender.send(Message("lobby", "d", moved.id, "", f"{tag}:{i}"))
            if i == 50:
                started.set()

    async with trio.open_nursery() as nursery:
        for tag, sender in senders.items():
            nursery.start_soon(send, tag, sender)
        nursery.start_soon(read_into, moved, tally)
        await started.wait()
        moved.drop()
        first = await moved.resume(n1.address)
        assert first.event == "trioroom.resumed", first
        assert json.loads(first.payload)["id"] == moved.id
        assert tally.count(moved.id, "n/far") < total, "the move happened while sending"
        nursery.start_soon(read_into, moved, tally, None)

        async def complete() -> bool:
            await trio.lowlevel.checkpoint()
            return all(
                tally.count(moved.id, f"{kind}/{tag}") >= total
                for tag in senders
                for kind in ("n", "d")
            )

        await eventually(complete)
        nursery.cancel_scope.cancel()
    for tag in senders:
        for kind in ("n", "d"):
            assert tally.got[(moved.id, f"{kind}/{tag}")] == list(range(total)), (kind, tag)
    # The same member, on the new node now, and nobody saw it leave or join.
    assert n1.server.connection(moved.id) is not None
    assert n0.server.connection(moved.id) is None
    assert await redis.hget(f"{prefix}:conns", moved.id) == n1.backplane.node_id
    assert await redis.hget(f"{prefix}:members:lobby", moved.id) == n1.backplane.node_id
    owner = await redis.get(f"{prefix}:session:{token_hash(moved.token).decode()}")
    assert owner == n1.backplane.node_id + moved.id
    seen = [m for m in await settle(senders["far"], watcher) if m.event != "n"]
    assert [m.event for m in seen] == []
    await moved.raw.send(Message("lobby", "chat", "", "", b"back"))
    assert (await watcher.recv_until("chat")).src == moved.id
    # And it can move on again, back to where it came from.
    moved.drop()
    await trio.sleep(0.05)
    assert (await moved.resume(n0.address)).event == "trioroom.resumed"
    await senders["far"].send(Message("lobby", "again", "", "", b"!"))
    while (msg := await moved.recv()).event != "again":
        pass
    assert msg.src == senders["far"].id
    assert await redis.hget(f"{prefix}:conns", moved.id) == n0.backplane.node_id
