"""The Redis backplane: PROTOCOL.md across nodes, efficiency, faults, workers.

Every test runs against a ``redis-server`` these tests start on a free port
(never a shared one), with keys and channels under a prefix of its own.
Behaviour tests spread their clients over three nodes: three Servers with a
RedisBackplane each, in this process but talking only through Redis. The
fault tests run nodes as real processes (``python -m trioroom serve``) where
it matters (SIGKILL), and the workers test runs ``--workers``.

Cross-node "nothing else arrived" checks use :func:`settle`: a direct message
from a sender to a receiver, which arrives after everything that sender's
node sent that receiver before (FIFO per sender and recipient).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio

from trioroom import Connection, Message, Server
from trioroom.backplane.redis import RedisBackplane
from trioroom.web import WebApp

from .serveproc import http_get, metric_value
from .wire import RawClient, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)

#: Generous bound on anything eventually consistent (only reached when broken).
LIMIT = 30.0
NODE_TTL = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A throwaway redis-server: no persistence, loopback only, its own port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: the clients see their connections drop, no goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@attrs.define
class Node:
    server: Server
    address: tuple[str, int]

    @property
    def backplane(self) -> RedisBackplane:
        backplane = self.server.backplane
        assert isinstance(backplane, RedisBackplane)
        return backplane

    async def connect(self, **kwargs: Any) -> RawClient:
        return await RawClient.connect(self.address, **kwargs)


StartCluster = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def start_cluster(
    nursery: trio.Nursery, redis_server: RedisProcess, prefix: str
) -> StartCluster:
    """Start ``n`` nodes (Server + RedisBackplane) sharing one Redis."""

    async def start(
        n: int = 3,
        *,
        url: str | None = None,
        servers: list[Server] | None = None,
        reconcile_interval: float = 30.0,
        backplane_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> list[Node]:
        nodes = []
        for i in range(n):
            options: dict[str, Any] = {
                "prefix": prefix,
                "node_ttl": NODE_TTL * 2,
                "op_timeout": 2.0,
                "reconnect_max": 0.5,
                "reconcile_interval": reconcile_interval,
                **(backplane_options or {}),
            }
            backplane = RedisBackplane(url or redis_server.url, **options)
            if servers is not None:
                server = servers[i]
                server.backplane = backplane
            else:
                server = Server(backplane=backplane, **settings)
            address = await nursery.start(server.serve, "127.0.0.1", 0)
            node = Node(server, address)
            assert node.backplane.connected
            nodes.append(node)
        return nodes

    return start


@pytest.fixture
async def redis(redis_server: RedisProcess) -> AsyncIterator[Any]:
    """A plain coredis client on the test Redis, to look at keys."""
    import coredis

    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        yield client


def members(msg: Message) -> list[str]:
    value = json.loads(msg.payload)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


async def settle(sender: RawClient, receiver: RawClient) -> list[Message]:
    """What ``receiver`` got before a marker sent now by ``sender``."""
    token = uuid.uuid4().hex
    await sender.send(Message("root", "__settle__", receiver.id, "", token))
    got = []
    while True:
        msg = await receiver.recv()
        if msg.event == "__settle__" and msg.payload == token.encode():
            return got
        got.append(msg)


async def join_all(room: str, clients: list[RawClient]) -> None:
    """Join ``clients`` to ``room`` and read every notice that causes, everywhere."""
    for client in clients:
        await client.join(room)
    for x in clients:
        for y in clients:
            if x is not y:
                await settle(x, y)


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = LIMIT) -> None:
    with trio.fail_after(limit):
        while not await check():  # noqa: ASYNC110 - polling Redis state
            await trio.sleep(0.02)


# -- §3 connect and identity across nodes -----------------------------------------


async def test_root_join_ack_and_new_member_span_nodes(start_cluster: StartCluster) -> None:
    n0, n1, n2 = await start_cluster()
    a = await n0.connect()
    b = await n1.connect()
    assert await a.recv() == Message("root", "new_member", "", "", b.id.encode())
    c = await n2.connect(read_root_ack=False)
    ack = await c.recv()
    assert (ack.room, ack.event, ack.dst) == ("root", "join_ack", "")
    ids = members(ack)
    assert ids[0] == ack.src and sorted(ids[1:]) == sorted([a.id, b.id])
    c.id = ack.src
    for other in (a, b):
        assert await other.recv() == Message("root", "new_member", "", "", c.id.encode())
    assert await settle(b, c) == []
    assert sorted(await n1.server.members("root")) == sorted([a.id, b.id, c.id])


async def test_root_member_list_limit_holds_across_nodes(start_cluster: StartCluster) -> None:
    nodes = await start_cluster(root_member_list_limit=3, root_notices=False)
    clients = [await nodes[i % 3].connect() for i in range(6)]
    last = await nodes[0].connect(read_root_ack=False)
    ids = members(await last.recv())
    assert len(ids) == 3
    assert set(ids[1:]) <= {c.id for c in clients}


async def test_disconnect_sends_member_left_on_root_to_other_nodes(
    start_cluster: StartCluster,
) -> None:
    n0, n1, _ = await start_cluster()
    a = await n0.connect()
    b = await n1.connect()
    await a.recv_until("new_member")
    b.reset()
    assert await a.recv() == Message("root", "member_left", "", "", b.id.encode())
    assert await n0.server.members("root") == [a.id]


# -- §4 join and leave across nodes --------------------------------------------------


async def test_join_leave_notices_and_member_lists_across_nodes(
    start_cluster: StartCluster,
) -> None:
    n0, n1, n2 = await start_cluster(root_notices=False)
    a, b, c = await n0.connect(), await n1.connect(), await n2.connect()
    assert members(await a.join("lobby")) == [a.id]
    assert members(await b.join("lobby")) == [b.id, a.id]
    assert await a.recv() == Message("lobby", "new_member", "", "", b.id.encode())
    ids = members(await c.join("lobby"))
    assert ids[0] == c.id and sorted(ids[1:]) == sorted([a.id, b.id])
    for other in (a, b):
        assert await other.recv() == Message("lobby", "new_member", "", "", c.id.encode())
    for node in (n0, n1, n2):
        assert sorted(await node.server.members("lobby")) == sorted([a.id, b.id, c.id])
        assert sorted(await node.server.rooms()) == ["lobby", "root"]

    assert await b.leave("lobby") == Message("lobby", "leave_ack", "", b.id, b.id.encode())
    for other in (a, c):
        assert await other.recv() == Message("lobby", "member_left", "", "", b.id.encode())
    assert sorted(await n1.server.members("lobby")) == sorted([a.id, c.id])

    await c.close()
    assert await a.recv() == Message("lobby", "member_left", "", "", c.id.encode())
    assert await a.leave("lobby") == Message("lobby", "leave_ack", "", a.id, a.id.encode())
    for node in (n0, n1, n2):
        assert await node.server.rooms() == ["root"]
        assert await node.server.members("lobby") == []
    assert await settle(b, a) == []


async def test_repeated_join_acks_again_without_notice_across_nodes(
    start_cluster: StartCluster,
) -> None:
    n0, n1, _ = await start_cluster(root_notices=False)
    a, b = await n0.connect(), await n1.connect()
    await a.join("lobby")
    await b.join("lobby")
    await a.recv_until("new_member")
    # The joiner alone: b has the list already (issue 14).
    assert members(await b.join("lobby")) == [b.id]
    assert await settle(b, a) == []


async def test_member_list_limit_counts_members_on_every_node(
    start_cluster: StartCluster,
) -> None:
    nodes = await start_cluster(member_list_limit=4, root_notices=False)
    local = [await nodes[0].connect() for _ in range(2)]
    remote = [await nodes[1].connect() for _ in range(4)]
    for client in local + remote:
        await client.join("lobby")
    last = await nodes[0].connect()
    ids = members(await last.join("lobby"))
    assert len(ids) == 4 == len(set(ids))
    # The joiner, this node's members, then members of other nodes.
    assert ids[:3] == [last.id, local[0].id, local[1].id]
    assert ids[3] in {c.id for c in remote}


async def test_concurrent_joins_on_different_nodes_always_see_each_other(
    start_cluster: StartCluster,
) -> None:
    """Each joiner learns of every other one: from its join_ack or a new_member."""
    nodes = await start_cluster(root_notices=False)
    clients = [await nodes[i % 3].connect() for i in range(9)]
    known: dict[str, set[str]] = {}

    async def join(client: RawClient) -> None:
        known[client.id] = set(members(await client.join("race")))

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(join, client)
    everyone = {c.id for c in clients}
    for client in clients:
        # Everything the others' nodes sent this client before now.
        for other in clients:
            for msg in await settle(other, client):
                if msg.event == "new_member":
                    known[client.id].add(msg.payload.decode())
        assert known[client.id] == everyone


# -- §5 custom events across nodes ---------------------------------------------------


async def test_broadcast_reaches_other_nodes_with_the_protocol_bytes(
    start_cluster: StartCluster,
) -> None:
    n0, n1, n2 = await start_cluster(root_notices=False)
    a, b, c, d = await n0.connect(), await n1.connect(), await n2.connect(), await n0.connect()
    outsider = await n1.connect()
    await join_all("lobby", [a, b, c, d])
    await a.send(Message("lobby", "chat", "", "spoofed-id", b"hi"))
    for other in (b, c, d):
        frame = await other.recv_frame()
        assert bytes(frame.data) == Message("lobby", "chat", "", a.id, b"hi").encode()
        assert len(frame.data) == 67
    await a.expect_nothing()
    assert await settle(a, outsider) == []


async def test_broadcast_as_non_member_is_dropped_everywhere(
    start_cluster: StartCluster,
) -> None:
    n0, n1, _ = await start_cluster(root_notices=False)
    a, b = await n0.connect(), await n1.connect()
    await b.join("lobby")
    await a.send(Message("lobby", "chat", "", "", b"x"))
    await a.send(Message("nowhere", "chat", "", "", b"x"))
    assert await settle(a, b) == []
    assert n0.server.metrics.frames_dropped["not_a_member"] == 2


async def test_direct_messages_reach_other_nodes(start_cluster: StartCluster) -> None:
    n0, n1, n2 = await start_cluster(root_notices=False)
    a, b, c = await n0.connect(), await n1.connect(), await n2.connect()
    await a.join("some-room")  # a direct message's room is root or one of the sender's
    await a.send(Message("some-room", "whisper", b.id, "spoofed", b"psst"))
    assert await b.recv() == Message("some-room", "whisper", b.id, a.id, b"psst")
    assert await settle(a, c) == []
    await a.expect_nothing()
    await a.send(Message("root", "whisper", str(uuid.uuid4()), "", b"lost"))
    await wait_until(lambda: n0.server.metrics.frames_dropped["unknown_dst"] == 1, LIMIT)


async def test_handlers_emit_broadcast_and_send_to_across_nodes(
    start_cluster: StartCluster,
) -> None:
    servers = [Server(root_notices=False) for _ in range(3)]

    @servers[0].on("fan")
    async def fan(conn: Connection, msg: Message) -> None:
        await conn.send("to-self", b"1", room=msg.room)
        await conn.broadcast(msg.room, "to-others", b"2")
        await servers[0].emit(msg.room, "to-all", b"3")
        assert await servers[0].send_to(msg.payload.decode(), "to-id", b"4")

    n0, n1, n2 = await start_cluster(servers=servers)
    a, b, c = await n0.connect(), await n1.connect(), await n2.connect()
    await a.join("lobby")
    await b.join("lobby")
    await a.recv_until("new_member")
    await a.send(Message("lobby", "fan", "", "", c.id))
    assert [(m.event, m.src) for m in [await a.recv(), await a.recv()]] == [
        ("to-self", ""),
        ("to-all", ""),
    ]
    assert [(m.event, m.src) for m in [await b.recv(), await b.recv()]] == [
        ("to-others", a.id),
        ("to-all", ""),
    ]
    assert await c.recv() == Message("root", "to-id", c.id, "", b"4")


async def test_fifo_per_sender_and_recipient_across_nodes(start_cluster: StartCluster) -> None:
    nodes = await start_cluster(root_notices=False, rate_limit=10_000, rate_burst=10_000)
    senders = [await node.connect() for node in nodes]
    receiver = await nodes[1].connect()
    await join_all("lobby", [*senders, receiver])

    async def send(sender: RawClient) -> None:
        for i in range(200):
            if i % 3:
                await sender.send(Message("lobby", "n", "", "", str(i)))
            else:
                await sender.send(Message("lobby", "n", receiver.id, "", str(i)))

    async with trio.open_nursery() as nursery:
        for sender in senders:
            nursery.start_soon(send, sender)
    got: dict[str, list[int]] = {s.id: [] for s in senders}
    while sum(map(len, got.values())) < 600:
        msg = await receiver.recv_until("n")
        got[msg.src].append(int(msg.payload))
    for sequence in got.values():
        assert sequence == list(range(200))


# -- efficiency ----------------------------------------------------------------------


async def test_one_subscriber_per_node_and_only_rooms_with_local_members(
    start_cluster: StartCluster, redis: Any, prefix: str
) -> None:
    n0, n1, n2 = await start_cluster(root_notices=False, rate_limit=10_000, rate_burst=10_000)
    a, b, c = await n0.connect(), await n1.connect(), await n2.connect()
    await a.join("lobby")
    await b.join("lobby")
    await settle(a, b)
    channel = f"{prefix}:room:lobby"
    assert (await redis.pubsub_numsub(channel))[channel] == 2
    received = n2.backplane.stats.room_received
    for i in range(300):
        await a.send(Message("lobby", "chat", "", "", str(i)))
    for i in range(300):
        assert (await b.recv()).payload == str(i).encode()
    assert await settle(a, c) == []
    assert n2.backplane.stats.room_received == received  # never sees lobby traffic
    stats = n0.backplane.stats
    assert stats.batches < stats.commands  # publishes were pipelined
    # One subscribed connection per node, whatever the rooms and clients.
    subscribed = [
        line
        for line in (await redis.client_list()) or []
        if line.get("name", "").startswith("trioroom:") and int(line.get("sub", 0)) > 0
    ]
    names = {line["name"] for line in subscribed}
    ours = {f"trioroom:{node.backplane.node_id}" for node in (n0, n1, n2)}
    assert ours <= names
    assert len([line for line in subscribed if line["name"] in ours]) == 3
    await b.leave("lobby")
    assert (await redis.pubsub_numsub(channel))[channel] == 1


async def test_disconnects_leave_no_membership_in_redis(
    start_cluster: StartCluster, redis: Any, prefix: str
) -> None:
    nodes = await start_cluster(root_notices=False)
    clients = [await nodes[i % 3].connect() for i in range(12)]
    for i, client in enumerate(clients):
        await client.join(f"room-{i % 4}")
    assert len(await redis.hgetall(f"{prefix}:conns")) == 12
    assert int((await redis.hgetall(f"{prefix}:rooms"))["root"]) == 12
    for client in clients[::2]:
        client.reset()
    for client in clients[1::2]:
        await client.close()
    await wait_until(lambda: not any(node.server.connections for node in nodes), LIMIT)

    async def empty() -> bool:
        keys = set(await redis.keys(f"{prefix}:*"))
        expected = {f"{prefix}:nodes"} | {
            f"{prefix}:{key}:{node.backplane.node_id}"
            for node in nodes
            for key in ("alive", "ready")
        }
        return keys == expected

    await eventually(empty)


async def test_reconcile_repairs_membership_drift(
    start_cluster: StartCluster, redis: Any, prefix: str
) -> None:
    (n0,) = await start_cluster(1, root_notices=False, reconcile_interval=0.2)
    a = await n0.connect()
    await a.join("lobby")
    node = n0.backplane.node_id
    # Redis lists a member this node does not have; the node lists one the
    # server does not have (as after a leave that timed out).
    await redis.hset(f"{prefix}:members:lobby", {"ghost-1": node})
    await redis.sadd(f"{prefix}:nodemembers:{node}", ["lobby\0ghost-1"])
    await redis.hincrby(f"{prefix}:rooms", "lobby", 1)
    await n0.backplane.joined("lobby", "ghost-2")

    async def repaired() -> bool:
        listed = await redis.hgetall(f"{prefix}:members:lobby")
        return listed == {a.id: node}

    await eventually(repaired)
    assert int((await redis.hgetall(f"{prefix}:rooms"))["lobby"]) == 1
    assert await n0.server.members("lobby") == [a.id]


# -- faults --------------------------------------------------------------------------


async def test_redis_outage_keeps_local_delivery_and_recovers(
    start_cluster: StartCluster, caplog: pytest.LogCaptureFixture
) -> None:
    own = RedisProcess()
    own.start()
    try:
        await _outage_scenario(start_cluster, own, caplog)
    finally:
        own.stop()


async def _outage_scenario(
    start_cluster: StartCluster, own: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioroom.backplane.redis")
    n0, n1 = await start_cluster(2, url=own.url, root_notices=False)
    a1, a2, b = await n0.connect(), await n0.connect(), await n1.connect()
    await join_all("lobby", [a1, a2, b])

    sent = 0
    stop = trio.Event()

    async def chatter() -> None:
        nonlocal sent
        while not stop.is_set():
            await a1.send(Message("lobby", "seq", "", "", str(sent)))
            sent += 1
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter)
        await wait_until(lambda: sent >= 20, LIMIT)
        own.stop()
        await wait_until(lambda: not n0.backplane.connected, LIMIT)
        await wait_until(lambda: n0.server.metrics.backplane_errors > 0, LIMIT)
        during = sent
        await wait_until(lambda: sent >= during + 20, LIMIT)  # local traffic goes on
        own.start()
        await wait_until(lambda: n0.backplane.connected and n1.backplane.connected, LIMIT)
        after = sent
        await wait_until(lambda: sent >= after + 20, LIMIT)
        stop.set()
    # The local member got every message, in order, outage or not.
    local = [int((await a2.recv_until("seq")).payload) for _ in range(sent)]
    assert local == list(range(sent))
    # The remote member got every message too: those of the outage from the
    # outbox, late, then the ones sent after. Only a batch in flight when
    # Redis died may come twice (at least once), so order is checked on the
    # first arrival of each.
    remote = [int(m.payload) for m in await settle(a1, b) if m.event == "seq"]
    assert list(dict.fromkeys(remote)) == list(range(sent))
    assert len(remote) - sent <= n0.backplane.max_batch
    # Membership was registered again: a newcomer sees everyone.
    c = await n1.connect()
    ids = members(await c.join("lobby"))
    assert sorted(ids) == sorted([a1.id, a2.id, b.id, c.id])
    await a1.send(Message("lobby", "dm", b.id, "", b"back"))
    assert (await b.recv_until("dm")).payload == b"back"
    assert any("lost" in r.getMessage() for r in caplog.records)
    assert any("reconnected" in r.getMessage() for r in caplog.records)


async def test_outage_messages_wait_in_the_outbox_and_arrive_in_order(
    start_cluster: StartCluster,
) -> None:
    """Issue 17 item 3: Redis down for 3 s while A sends 100 messages; B gets all 100."""
    own = RedisProcess()
    own.start()
    try:
        await _outbox_scenario(start_cluster, own)
    finally:
        own.stop()


async def _outbox_scenario(start_cluster: StartCluster, own: RedisProcess) -> None:
    n0, n1 = await start_cluster(2, url=own.url, root_notices=False)
    a = await n0.connect()
    b1, b2 = await n1.connect(), await n1.connect()
    await join_all("lobby", [a, b1, b2])
    own.stop()
    stopped = time.monotonic()
    await wait_until(lambda: not n0.backplane.connected and not n1.backplane.connected, LIMIT)
    for i in range(100):
        await a.send(Message("lobby", "seq", "", "", str(i)))
    # A direct message and a membership change made during the outage too.
    await a.send(Message("lobby", "dm", b1.id, "", b"psst"))
    c = await n0.connect()
    await c.join("lobby")
    await trio.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))
    for b in (b1, b2):
        # Nothing crossed while Redis was down.
        with trio.move_on_after(0.2):
            msg = await b.recv()
            raise AssertionError(f"received during the outage: {msg}")
    own.start()
    await wait_until(lambda: n0.backplane.connected and n1.backplane.connected, LIMIT)
    joined = Message("lobby", "new_member", "", "", c.id.encode())
    dm = Message("lobby", "dm", b1.id, a.id, b"psst")
    for b, after in ((b1, [dm, joined]), (b2, [joined])):
        with trio.fail_after(LIMIT):
            got = [await b.recv() for _ in range(100 + len(after))]
        # All 100, in order, then what was sent after them.
        assert [int(m.payload) for m in got[:100] if m.event == "seq"] == list(range(100))
        assert got[100:] == after
    # New traffic goes after the outbox; the newcomer is a member everywhere.
    await a.send(Message("lobby", "seq", "", "", b"100"))
    for b in (b1, b2):
        assert await b.recv() == Message("lobby", "seq", "", a.id, b"100")

    async def registered() -> bool:
        return sorted(await n1.server.members("lobby")) == sorted([a.id, b1.id, b2.id, c.id])

    await eventually(registered)
    assert n0.server.metrics.frames_dropped["backplane_outbox"] == 0


async def test_outbox_bound_drops_the_newest_and_tells_the_extended_sender(
    start_cluster: StartCluster,
) -> None:
    own = RedisProcess()
    own.start()
    try:
        await _outbox_bound_scenario(start_cluster, own)
    finally:
        own.stop()


async def _outbox_bound_scenario(start_cluster: StartCluster, own: RedisProcess) -> None:
    # Each held message: 16 + 8 + 2 + its exclude (a 36-byte ID) + a 126-byte frame.
    n0, n1 = await start_cluster(
        2, url=own.url, root_notices=False, backplane_options={"outbox_bytes": 10 * 188}
    )
    a = await RawClient.connect(
        n0.address, path="/ws", subprotocols=["trioroom.v1"], read_root_ack=False
    )
    session = await a.recv_until("trioroom.session")
    a.id = json.loads(session.payload)["id"]
    await a.recv_until("join_ack")
    b = await n1.connect()
    await join_all("lobby", [a, b])
    own.stop()
    await wait_until(lambda: not n0.backplane.connected, LIMIT)
    payload = "x" * 60
    for i in range(15):
        await a.send(Message("lobby", "seq", "", "", f"{i:02d}{payload}"))
    errors = [json.loads((await a.recv_until("trioroom.error")).payload) for _ in range(5)]
    assert {e["code"] for e in errors} == {"backplane_unavailable"}
    assert {e["event"] for e in errors} == {"seq"}
    assert "outbox is full" in errors[0]["message"]
    assert n0.server.metrics.frames_dropped["backplane_outbox"] == 5
    own.start()
    # The ten that fit arrive, in order, and nothing of the five dropped.
    got = [(await b.recv_until("seq")).payload[:2] for _ in range(10)]
    assert got == [f"{i:02d}".encode() for i in range(10)]
    assert await settle(a, b) == []


async def test_outbox_drops_what_waited_too_long(start_cluster: StartCluster) -> None:
    own = RedisProcess()
    own.start()
    try:
        n0, n1 = await start_cluster(
            2, url=own.url, root_notices=False, backplane_options={"outbox_seconds": 0.5}
        )
        a, b = await n0.connect(), await n1.connect()
        await join_all("lobby", [a, b])
        own.stop()
        await wait_until(lambda: not n0.backplane.connected, LIMIT)
        for i in range(3):
            await a.send(Message("lobby", "seq", "", "", str(i)))
        await trio.sleep(1.0)
        await a.send(Message("lobby", "seq", "", "", b"3"))
        await wait_until(lambda: n0.server.metrics.frames_dropped["backplane_outbox"] == 3, LIMIT)
        own.start()
        await wait_until(lambda: n0.backplane.connected, LIMIT)
        # The expired three never arrive (the fourth may, unless it expired too).
        assert {m.payload for m in await settle(a, b)} <= {b"3"}
    finally:
        own.stop()


async def test_healthz_reports_the_backplane_and_can_require_it(
    nursery: trio.Nursery, prefix: str
) -> None:
    own = RedisProcess()
    own.start()
    try:
        await _health_scenario(nursery, prefix, own)
    finally:
        own.stop()


async def _health_scenario(nursery: trio.Nursery, prefix: str, own: RedisProcess) -> None:
    nodes: dict[bool, tuple[Server, tuple[str, int]]] = {}
    for required in (False, True):
        backplane = RedisBackplane(
            own.url, prefix=prefix, node_ttl=NODE_TTL * 2, op_timeout=2.0, reconnect_max=0.5
        )
        server = Server(backplane=backplane, health_requires_backplane=required)
        server.process_request = WebApp(server, demo=False)
        nodes[required] = (server, await nursery.start(server.serve, "127.0.0.1", 0))

    async def health(required: bool) -> tuple[int, str, str, float]:
        address = nodes[required][1]
        response = await http_get(address, "/healthz")
        body = json.loads(response.body)
        gauge = metric_value((await http_get(address, "/metrics")).text, "trioroom_backplane_up")
        return response.status, body["status"], body["backplane"], gauge

    assert await health(False) == (200, "ok", "up", 1)
    assert await health(True) == (200, "ok", "up", 1)
    own.stop()
    await wait_until(lambda: not any(s.backplane.up for s, _ in nodes.values()), LIMIT)
    # Reported either way; a 503 only where the operator asked for it.
    assert await health(False) == (200, "degraded", "down", 0)
    assert await health(True) == (503, "backplane_down", "down", 0)
    own.start()
    await wait_until(lambda: all(s.backplane.up for s, _ in nodes.values()), LIMIT)
    assert await health(False) == (200, "ok", "up", 1)
    assert await health(True) == (200, "ok", "up", 1)


# -- real processes ------------------------------------------------------------------


@attrs.define
class Process:
    process: trio.Process
    address: tuple[str, int]

    async def connect(self, **kwargs: Any) -> RawClient:
        return await RawClient.connect(self.address, **kwargs)


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    with trio.fail_after(LIMIT):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            if not chunk:
                raise RuntimeError(f"process exited before printing a line: {data!r}")
            data += chunk
    return data.decode().strip()


def _address(line: str) -> tuple[str, int]:
    assert line.startswith("trioroom serving on ws://"), line
    host, port = line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


@pytest.fixture
async def spawn(redis_server: RedisProcess, prefix: str) -> AsyncIterator[Any]:
    """Start ``python -m trioroom serve`` processes; kill leftovers at the end."""
    started: list[trio.Process] = []

    async def run(*args: str, ttl: float = NODE_TTL) -> Process:
        command = [sys.executable, "-m", "trioroom", "serve", "--port", "0", "--log-level"]
        command += ["warning", "--redis", redis_server.url, "--redis-prefix", prefix]
        command += ["--node-ttl", str(ttl), *args]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
        started.append(process)
        assert process.stdout is not None
        return Process(process, _address(await _read_line(process.stdout)))

    try:
        yield run
    finally:
        with trio.CancelScope(shield=True):
            for process in started:
                if process.returncode is None:
                    process.kill()
                await process.wait()


async def test_processes_share_rooms_and_a_killed_node_is_swept(
    spawn: Any, redis: Any, prefix: str
) -> None:
    nodes = [await spawn() for _ in range(3)]
    a, b, c = [await node.connect() for node in nodes]
    await join_all("lobby", [a, b, c])
    await a.send(Message("lobby", "chat", "", "", b"hi"))
    for other in (b, c):
        assert await other.recv() == Message("lobby", "chat", "", a.id, b"hi")
    await a.send(Message("lobby", "dm", c.id, "", b"psst"))
    assert await c.recv() == Message("lobby", "dm", c.id, a.id, b"psst")

    killed_at = trio.current_time()
    nodes[2].process.kill()  # SIGKILL: no cleanup at all
    for survivor in (a, b):
        left = {(m.room, m.payload) for m in [await survivor.recv(), await survivor.recv()]}
        assert left == {("lobby", c.id.encode()), ("root", c.id.encode())}
    # Noticed within about 1.5 TTL (plus scheduling slack on a busy machine).
    assert trio.current_time() - killed_at < NODE_TTL * 1.5 + 10
    d = await nodes[0].connect()
    assert sorted(members(await d.join("lobby"))) == sorted([a.id, b.id, d.id])
    assert c.id not in await redis.hgetall(f"{prefix}:conns")

    async def swept() -> bool:
        return len(await redis.smembers(f"{prefix}:nodes")) == 2

    await eventually(swept)


async def test_workers_share_one_port(spawn: Any, redis: Any, prefix: str) -> None:
    supervisor = await spawn("--workers", "2", "--no-root-notices")
    clients = [await supervisor.connect() for _ in range(8)]
    assert len(await redis.smembers(f"{prefix}:nodes")) == 2
    await join_all("lobby", clients)
    first, *others = clients
    await first.send(Message("lobby", "chat", "", "", b"all"))
    for other in others:
        assert await other.recv() == Message("lobby", "chat", "", first.id, b"all")
    await others[-1].send(Message("lobby", "dm", first.id, "", b"back"))
    assert (await first.recv()).payload == b"back"
    supervisor.process.send_signal(signal.SIGTERM)
    with trio.fail_after(LIMIT):
        assert await supervisor.process.wait() == 0

    async def gone() -> bool:
        return not await redis.smembers(f"{prefix}:nodes")

    await eventually(gone)


async def test_workers_need_redis() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "trioroom", "serve", "--workers", "2"],
        capture_stderr=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "TRIOROOM_REDIS"},
    )
    assert result.returncode == 2
    assert b"--workers needs --redis" in result.stderr


async def test_bad_redis_url_is_a_usage_error() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "trioroom", "serve", "--redis", "localhost:6379"],
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"not a Redis URL" in result.stderr
