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
import os
import shutil
import signal
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import trio

from trioroom import Message, Server
from trioroom.backplane.redis.keys import token_hash
from trioroom.extension import UNNUMBERED

from . import test_redis
from .test_redis import (
    LIMIT,
    Node,
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
spawn = test_redis.spawn

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
    async def open(cls, address: tuple[str, int], query: str = "") -> Session:
        raw = await RawClient.connect(
            address, path="/ws" + query, subprotocols=V1, read_root_ack=False
        )
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

    async def resume(self, address: tuple[str, int], query: str = "") -> Message:
        """Reconnect with the token: the first frame (``trioroom.resumed`` or ``not_resumed``)."""
        self.raw = await RawClient.connect(
            address,
            path=f"/ws?resume={self.token}&last={self.received}{query}",
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


async def drop_until_suspended(session: Session, node: Node) -> None:
    """Drop the session's socket and wait until ``node`` has suspended the session."""
    session.drop()

    async def suspended() -> bool:
        await trio.lowlevel.checkpoint()
        conn = node.server.connection(session.id)
        return conn is not None and conn.suspended

    await eventually(suspended)


async def in_lobby_with_watchers(n0: Node, n1: Node) -> tuple[Session, RawClient, RawClient]:
    """A session on ``n0`` in ``lobby``, and a watcher in ``lobby`` on each node."""
    session = await Session.open(n0.address)
    await session.join("lobby")
    near, far = await n0.connect(), await n1.connect()
    for watcher in (near, far):
        await watcher.join("lobby")
    await settle(near, far)
    return session, near, far


def after_each_offer(node: Node, then: Callable[[], None]) -> None:
    """Call ``then`` each time ``node`` has offered a session to another node (before the cut)."""
    mover = node.server.handover
    original = mover.prepare_handover

    async def offer_then(token: str, digest: str, last: int) -> Any:
        offer = await original(token, digest, last)
        if not isinstance(offer, str):
            then()
        return offer

    mover.prepare_handover = offer_then  # type: ignore[method-assign]


async def told_not_resumed(session: Session, node: Node, reason: str) -> str:
    """Resume at ``node``: refused for ``reason``, with a fresh session; its ID."""
    with trio.fail_after(LIMIT):
        first = await session.resume(node.address)
    assert first.event == "trioroom.not_resumed", first
    assert json.loads(first.payload) == {"reason": reason}
    fresh = await session.raw.recv()
    assert fresh.event == "trioroom.session"
    fresh_id: str = json.loads(fresh.payload)["id"]
    assert fresh_id != session.id
    assert node.server.connection(session.id) is None
    return fresh_id


async def seen_leaving_once(session: Session, near: RawClient, far: RawClient) -> None:
    """Both watchers see ``session`` leave ``lobby``, and nothing more of it."""
    with trio.fail_after(LIMIT):
        for watcher in (near, far):
            left = await watcher.recv_until("member_left", "lobby")
            assert left.payload.decode() == session.id
    assert [m.event for m in await settle(near, far)] == []
    await near.expect_nothing()


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


async def test_unknown_token_means_no_node_knows_it_and_claims_must_match(
    start_cluster: StartCluster,
) -> None:
    async def authorize(request: Any) -> Any:
        return {"user": request.query.get("user", "")}

    servers = [Server(authorize=authorize, root_notices=False) for _ in range(2)]
    n0, n1 = await start_cluster(2, servers=servers)
    session = await Session.open(n0.address, "?user=ann")
    await session.join("lobby")
    session.drop()
    first = await Session(session.raw, "nonsense", "").resume(n1.address, "&user=ann")
    assert json.loads(first.payload) == {"reason": "unknown_token"}
    first = await session.resume(n1.address, "&user=bob")
    assert json.loads(first.payload) == {"reason": "identity_mismatch"}
    # Refused without harm: the session is still there, for its owner.
    first = await session.resume(n1.address, "&user=ann")
    assert first.event == "trioroom.resumed"
    conn = n1.server.connection(session.id)
    assert conn is not None and conn.rooms == {"root", "lobby"}


async def test_while_redis_is_stalled_a_resume_elsewhere_is_refused_in_time_and_the_session_stays(
    start_cluster: StartCluster,
) -> None:
    # A Redis of this test's own, stopped (SIGSTOP) while the client comes back.
    own = test_redis.RedisProcess()
    own.start()
    try:
        n0, n1 = await start_cluster(2, url=own.url, root_notices=False)
        session = await Session.open(n0.address)
        await session.join("lobby")
        await drop_until_suspended(session, n0)
        assert own.process is not None
        os.kill(own.process.pid, signal.SIGSTOP)
        try:
            # Another node must ask the holder through Redis: it cannot, and
            # says so within its bounds instead of hanging the client.
            with trio.fail_after(LIMIT):
                first = await session.resume(n1.address)
            assert first.event == "trioroom.not_resumed", first
            # Not unknown_token: the token is fine, the holder cannot be asked.
            assert json.loads(first.payload) == {"reason": "unavailable"}
            fresh = await session.raw.recv()
            assert fresh.event == "trioroom.session"
            assert json.loads(fresh.payload)["id"] != session.id
            assert n1.server.connection(session.id) is None
            # The node that holds the session needs no Redis to resume it.
            session.drop()
            with trio.fail_after(LIMIT):
                first = await session.resume(n0.address)
            assert first.event == "trioroom.resumed", first
            conn = n0.server.connection(session.id)
            assert conn is not None and conn.rooms == {"root", "lobby"}
        finally:
            os.kill(own.process.pid, signal.SIGCONT)
    finally:
        own.stop()


async def test_when_redis_stalls_mid_move_the_client_is_told_and_the_session_ends_once(
    start_cluster: StartCluster,
) -> None:
    # The old node has offered the session (it is suspended and promised to
    # the new node) when Redis stops: the new node cannot subscribe to the
    # session's rooms, so the move cannot happen. The client must be told in
    # time, and once Redis is back the session must end on the old node,
    # once, with its members told, and leave nothing behind in Redis.
    own = test_redis.RedisProcess()
    own.start()
    try:
        n0, n1 = await start_cluster(
            2,
            url=own.url,
            root_notices=False,
            close_timeout=1.0,
            backplane_options={"op_timeout": 0.5},
        )
        session, near, far = await in_lobby_with_watchers(n0, n1)
        assert own.process is not None
        pid = own.process.pid
        offered = trio.Event()

        def stall() -> None:
            os.kill(pid, signal.SIGSTOP)
            offered.set()

        after_each_offer(n0, stall)
        await drop_until_suspended(session, n0)
        try:
            fresh_id = await told_not_resumed(session, n1, "node_lost")
            assert offered.is_set(), "Redis stopped after the offer, not before"
        finally:
            os.kill(pid, signal.SIGCONT)
        # Redis is back: the old node ends the session it had offered.
        await seen_leaving_once(session, near, far)
        assert n0.server.connection(session.id) is None
        assert n0.server.metrics.disconnects["handover_failed"] == 1
        import coredis

        async with coredis.Redis.from_url(own.url, decode_responses=True) as redis:

            async def gone_from_redis() -> bool:
                members = await redis.hgetall(f"{n0.backplane.prefix}:members:lobby")
                conns = await redis.hget(f"{n0.backplane.prefix}:conns", session.id)
                owner = await redis.get(
                    f"{n0.backplane.prefix}:session:{token_hash(session.token).decode()}"
                )
                return session.id not in members and conns is None and owner is None

            await eventually(gone_from_redis)
        # The fresh session works.
        await session.raw.send(Message("lobby", "join"))
        for watcher in (near, far):
            joined = await watcher.recv_until("new_member", "lobby")
            assert joined.payload.decode() == fresh_id
    finally:
        own.stop()


@pytest.mark.parametrize(("how", "reason"), [("kick", "kicked"), ("overflow", "buffer_overflow")])
async def test_a_session_ended_while_it_moves_ends_once_and_its_client_is_told(
    start_cluster: StartCluster, how: str, reason: str
) -> None:
    # The session ends on its node (the application kicks it, or its queue
    # overflows) after the node offered it to another node, before the cut:
    # the end must win over the move. The client is told why on the new
    # node, and the members see the session leave once.
    n0, n1 = await start_cluster(2, root_notices=False, queue_frames=4)
    session, near, far = await in_lobby_with_watchers(n0, n1)
    outcome: list[bool] = []

    async def end() -> None:
        if how == "kick":
            outcome.append(await n0.server.kick(session.id))
        else:
            # More than its queue holds, while nobody reads it.
            outcome.extend([await n0.server.send_to(session.id, "x", str(i)) for i in range(8)])

    async with trio.open_nursery() as nursery:
        after_each_offer(n0, lambda: nursery.start_soon(end))
        await drop_until_suspended(session, n0)
        await told_not_resumed(session, n1, reason)
    if how == "kick":
        assert outcome == [True]
    else:
        assert outcome[:4] == [True] * 4 and False in outcome
        assert n0.server.metrics.frames_dropped["session_overflow"] == 1
    await seen_leaving_once(session, near, far)
    assert n0.server.connection(session.id) is None


# -- real processes ---------------------------------------------------------------------

#: The same as ROOMY, as flags of ``trioroom serve``.
ROOMY_FLAGS = [f"--{name.replace('_', '-')}={value}" for name, value in ROOMY.items()]


async def stream_to(
    sender: RawClient, rooms: list[str], sessions: list[Session], total: int, done: trio.Event
) -> None:
    """Send ``total`` numbered messages to each room and to each session, paced."""
    for i in range(total):
        for room in rooms:
            await sender.send(Message(room, "n", "", "", f"{room}:{i}"))
        for session in sessions:
            await sender.send(Message(rooms[0], "d", session.id, "", f"dm:{i}"))
        await trio.sleep(0.002)
    done.set()


async def drop_and_resume(
    sessions: list[Session], addresses: list[tuple[str, int]], tally: Tally, nursery: trio.Nursery
) -> None:
    """Drop every session's socket (no close frame), then resume each at its address."""
    for session in sessions:
        session.drop()
    for session, address in zip(sessions, addresses, strict=True):
        first = await session.resume(address)
        assert first.event == "trioroom.resumed", (session.id, first)
        assert json.loads(first.payload)["id"] == session.id
        nursery.start_soon(read_into, session, tally)


async def check_streams(
    tally: Tally, sessions: list[Session], rooms_of: dict[str, str], total: int
) -> None:
    async def complete() -> bool:
        await trio.lowlevel.checkpoint()
        return all(
            tally.count(s.id, f"n/{rooms_of[s.id]}") >= total and tally.count(s.id, "d/dm") >= total
            for s in sessions
        )

    await eventually(complete, limit=LIMIT * 2)
    for s in sessions:
        assert tally.got[(s.id, f"n/{rooms_of[s.id]}")] == list(range(total)), s.id
        assert tally.got[(s.id, "d/dm")] == list(range(total)), s.id


async def no_membership_notices(sender: RawClient, sessions: list[Session]) -> None:
    """The sender (a member of every room) saw nobody leave or join: only markers."""
    for session in sessions:
        await session.raw.send(Message("root", "marker", sender.id, "", session.id))
    seen = []
    while len(seen) < len(sessions):
        msg = await sender.recv()
        assert msg.event == "marker", msg
        seen.append(msg.payload.decode())
    assert sorted(seen) == sorted(s.id for s in sessions)


async def owners(redis: Any, prefix: str, sessions: list[Session]) -> dict[str, str]:
    """The node holding each session, from Redis."""
    found = {}
    for s in sessions:
        value = await redis.get(f"{prefix}:session:{token_hash(s.token).decode()}")
        assert value is not None and value.endswith(s.id)
        found[s.id] = value[:32]
    return found


async def test_twenty_sessions_resume_across_two_workers(
    spawn: Any, redis: Any, prefix: str
) -> None:
    supervisor = await spawn("--workers", "2", "--no-root-notices", *ROOMY_FLAGS)
    rooms = ["r0", "r1", "r2", "r3"]
    sender = await supervisor.connect()
    for room in rooms:
        await sender.join(room)
    sessions = [await Session.open(supervisor.address) for _ in range(20)]
    rooms_of = {s.id: rooms[i % len(rooms)] for i, s in enumerate(sessions)}
    for s in sessions:
        await s.join(rooms_of[s.id])
    for _ in sessions:
        assert (await sender.recv()).event == "new_member"
    before = await owners(redis, prefix, sessions)
    sender_node = await redis.hget(f"{prefix}:conns", sender.id)
    assert set(before.values()) == set(await redis.smembers(f"{prefix}:nodes"))
    assert any(node != sender_node for node in before.values()), "some on another worker"
    total = 300
    tally = Tally()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for s in sessions:
            nursery.start_soon(read_into, s, tally)
        nursery.start_soon(stream_to, sender, rooms, sessions, total, done)
        await trio.sleep(0.1)  # under way
        # The kernel spreads the new sockets over the workers: about half
        # of the sessions come back to the other one.
        await drop_and_resume(sessions, [supervisor.address] * len(sessions), tally, nursery)
        assert not done.is_set(), "the resumes happened while the sender was sending"
        await check_streams(tally, sessions, rooms_of, total)
        after = await owners(redis, prefix, sessions)
        moved = [i for i in after if after[i] != before[i]]
        assert moved, "some sessions resumed on the other worker"
        for s in sessions:
            assert await redis.hget(f"{prefix}:members:{rooms_of[s.id]}", s.id) == after[s.id]
        nursery.cancel_scope.cancel()
    await no_membership_notices(sender, sessions)


async def test_sessions_resume_across_two_processes_on_two_ports(
    spawn: Any, redis: Any, prefix: str
) -> None:
    a = await spawn("--no-root-notices", *ROOMY_FLAGS)
    b = await spawn("--no-root-notices", *ROOMY_FLAGS)
    assert a.address != b.address
    rooms = ["lobby"]
    sender = await a.connect()
    await sender.join("lobby")
    on_a = [await Session.open(a.address) for _ in range(2)]
    on_b = [await Session.open(b.address) for _ in range(2)]
    sessions = on_a + on_b
    for s in sessions:
        await s.join("lobby")
    for _ in sessions:
        assert (await sender.recv()).event == "new_member"
    rooms_of = {s.id: "lobby" for s in sessions}
    before = await owners(redis, prefix, sessions)
    total = 300
    tally = Tally()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for s in sessions:
            nursery.start_soon(read_into, s, tally)
        nursery.start_soon(stream_to, sender, rooms, sessions, total, done)
        await trio.sleep(0.1)
        # Each comes back to the other process.
        await drop_and_resume(sessions, [b.address] * 2 + [a.address] * 2, tally, nursery)
        assert not done.is_set(), "the resumes happened while the sender was sending"
        await check_streams(tally, sessions, rooms_of, total)
        after = await owners(redis, prefix, sessions)
        assert all(after[s.id] != before[s.id] for s in sessions)
        nursery.cancel_scope.cancel()
    await no_membership_notices(sender, sessions)


async def test_a_resume_after_the_node_was_killed_is_told_node_lost_at_once(
    spawn: Any, redis: Any, prefix: str
) -> None:
    # A long liveness TTL: the killed node still looks registered when the
    # client comes back, and a long close timeout: waiting for an answer
    # from it would take over a minute.
    a = await spawn("--no-root-notices", ttl=120)
    b = await spawn("--no-root-notices", "--close-timeout", "60", ttl=120)
    session = await Session.open(a.address)
    await session.join("lobby")
    member = await b.connect()
    await member.join("lobby")
    assert (await session.recv()).event == "new_member"
    a.process.kill()  # SIGKILL: no cleanup
    await a.process.wait()
    assert await redis.exists(
        [f"{prefix}:alive:{(await owners(redis, prefix, [session]))[session.id]}"]
    )
    with trio.fail_after(30):
        first = await session.resume(b.address)
    assert first.event == "trioroom.not_resumed"
    assert json.loads(first.payload) == {"reason": "node_lost"}
    # Followed by a fresh session on the node it reached.
    fresh = await session.raw.recv()
    assert fresh.event == "trioroom.session"
    assert json.loads(fresh.payload)["id"] != session.id
