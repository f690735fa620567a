"""Heartbeats, deadlines, slow consumers, limits and operations (issue 5).

Timeouts and heartbeats run on in-memory streams under ``autojump_clock``, so
nothing here waits for real time; the slow-consumer test uses real sockets.
"""

from __future__ import annotations

import logging
import socket

import pytest
import trio
import trio.testing
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from trioroom import CloseCode, Connection, Message, Server
from trioroom.engines.native import StreamTransport
from trioroom.metrics import PrometheusCollector
from trioroom.wsframe import binary_frame

from .wire import (
    HYPERCORN_CLIENT_CLOSE,
    HandshakeRejected,
    RawClient,
    StartServer,
    memory_client,
    wait_until,
)


async def answer_pings(client: RawClient) -> None:
    """Read forever so the client's protocol answers the server's pings."""
    while True:
        data = await client.stream.receive_some(65536)
        if not data:
            return
        client.protocol.receive_data(data)
        client.protocol.events_received()
        await client._flush_quietly()


# -- heartbeats and deadlines (virtual time) ------------------------------------------


async def test_peer_that_does_not_answer_pings_is_closed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=5, ping_timeout=3, root_notices=False)
    silent = await memory_client(server, nursery)
    alive = await memory_client(server, nursery)
    nursery.start_soon(answer_pings, alive)
    start = trio.current_time()
    await wait_until(lambda: server.connection(silent.id) is None)
    assert 8 <= trio.current_time() - start < 9
    assert server.metrics.heartbeat_failures == 1
    assert server.metrics.disconnects["heartbeat_timeout"] == 1
    await trio.sleep(100)
    assert server.connection(alive.id) is not None


async def test_heartbeat_works_while_queue_is_full_and_peer_stopped_reading(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(
        ping_interval=5,
        ping_timeout=3,
        write_timeout=1000,
        slow_consumer_policy="drop_oldest",
        queue_frames=8,
        root_notices=False,
    )
    stuck = await memory_client(server, nursery, lockstep=True)
    conn = server.connection(stuck.id)
    assert conn is not None
    start = trio.current_time()
    for i in range(100):
        await server.send_to(stuck.id, "flood", str(i))
    assert conn.queued_frames <= 8
    assert server.metrics.frames_dropped["drop_oldest"] > 0
    await wait_until(lambda: server.connection(stuck.id) is None)
    assert 8 <= trio.current_time() - start < 9
    assert server.metrics.heartbeat_failures == 1
    assert conn.close_code == CloseCode.INTERNAL_ERROR


async def test_write_timeout_closes_a_peer_that_stopped_reading(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=None, write_timeout=7, slow_consumer_policy="drop_oldest")
    stuck = await memory_client(server, nursery, lockstep=True)
    start = trio.current_time()
    await server.send_to(stuck.id, "x", b"y")
    await wait_until(lambda: server.connection(stuck.id) is None)
    assert 7 <= trio.current_time() - start < 8
    assert server.metrics.disconnects["write_timeout"] == 1


async def test_silent_socket_is_dropped_at_the_handshake_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(handshake_timeout=4)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    start = trio.current_time()
    # Half a request line, then silence (slowloris).
    await client_stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x")
    await server.handle_stream(server_stream)
    assert 4 <= trio.current_time() - start < 5
    assert server.metrics.handshakes_rejected[408] == 1
    assert await client_stream.receive_some(100) == b""


async def test_default_server_has_no_rate_limit_and_loses_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # A feed or a game tick publishing fast must not lose messages unless the
    # operator chose a rate limit: 1,000 messages at once all arrive, in order.
    server = Server(root_notices=False, ping_interval=None)
    assert server.settings.rate_limit is None
    a = await memory_client(server, nursery)
    b = await memory_client(server, nursery)
    for i in range(1000):
        await a.send(Message("root", "n", b.id, "", str(i)))
    got = [(await b.recv()).payload for _ in range(1000)]
    assert got == [str(i).encode() for i in range(1000)]
    assert server.metrics.frames_dropped["rate_limited"] == 0


@pytest.mark.parametrize("off", [0, None])
async def test_rate_limit_zero_or_none_turns_it_off(
    off: float | None, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(rate_limit=off, rate_burst=1, root_notices=False, ping_interval=None)
    a = await memory_client(server, nursery)
    b = await memory_client(server, nursery)
    for i in range(50):
        await a.send(Message("root", "n", b.id, "", str(i)))
    assert [(await b.recv()).payload for _ in range(50)] == [str(i).encode() for i in range(50)]


async def test_rate_limit_drops_messages_over_the_token_bucket(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioroom")
    server = Server(
        rate_limit=10,
        rate_burst=5,
        rate_limit_policy="drop",
        root_notices=False,
        ping_interval=None,
    )
    a = await memory_client(server, nursery)
    b = await memory_client(server, nursery)
    for i in range(20):
        await a.send(Message("root", "n", b.id, "", str(i)))
    got = [(await b.recv()).payload for _ in range(5)]
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    await wait_until(lambda: server.metrics.frames_dropped["rate_limited"] == 15)
    # Fifteen drops, one log line: a client must not be able to fill the disk.
    logged = [r for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(logged) == 1
    assert getattr(logged[0], "conn_id", None) == a.id
    assert server.connection(a.id) is not None
    await trio.sleep(0.3)  # three more tokens
    for i in range(20, 30):
        await a.send(Message("root", "n", b.id, "", str(i)))
    await wait_until(lambda: server.metrics.frames_dropped["rate_limited"] == 15 + 7)
    got = [(await b.recv()).payload for _ in range(3)]
    assert got == [b"20", b"21", b"22"]
    await trio.sleep(10)  # the bucket refills to its burst size, not more
    for i in range(30, 40):
        await a.send(Message("root", "n", b.id, "", str(i)))
    await wait_until(lambda: server.metrics.frames_dropped["rate_limited"] == 22 + 5)
    assert [(await b.recv()).payload for _ in range(5)] == [b"30", b"31", b"32", b"33", b"34"]


async def test_rate_limit_policy_close_is_the_default_and_tells_plain_clients(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(rate_limit=10, rate_burst=5, root_notices=False, ping_interval=None)
    assert server.settings.rate_limit_policy == "close"
    a = await memory_client(server, nursery)
    b = await memory_client(server, nursery)
    for i in range(6):
        await a.send(Message("root", "n", b.id, "", str(i)))
    # A plain wsrooms client learns why through the close frame.
    assert await a.wait_closed() == (CloseCode.POLICY_VIOLATION, "rate limit")
    # What came within the limit was delivered before the close.
    got = [(await b.recv()).payload for _ in range(5)]
    assert got == [str(i).encode() for i in range(5)]
    await wait_until(lambda: server.connection(a.id) is None)
    assert server.metrics.disconnects["rate_limited"] == 1
    assert server.metrics.close_codes[CloseCode.POLICY_VIOLATION] == 1
    assert server.metrics.frames_dropped["rate_limited"] == 1
    await b.expect_nothing()


async def test_rate_limit_close_tells_an_extended_client_which_request(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(rate_limit=1, rate_burst=1, ping_interval=None, root_notices=False)
    raw = await memory_client(server, nursery, subprotocols=["trioroom.v1"], read_root_ack=False)
    while (await raw.recv()).event != "join_ack":
        pass
    await raw.send(Message("root", "x", "", "?1", b""))
    await raw.send(Message("root", "x", "", "?2", b""))
    assert (await raw.recv()).dst == "?1"  # the reply to the broadcast
    error = await raw.recv()
    assert (error.event, error.dst) == ("trioroom.error", "?2")
    assert await raw.wait_closed() == (CloseCode.POLICY_VIOLATION, "rate limit")


async def test_graceful_shutdown_finishes_within_deadline_despite_stuck_client(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=None, write_timeout=1000, close_timeout=2)
    disconnected: list[tuple[str, int | None, str]] = []

    @server.on_disconnect
    async def gone(conn: Connection) -> None:
        disconnected.append((conn.id, conn.close_code, conn.disconnect_reason))

    polite = await memory_client(server, nursery)
    stuck = await memory_client(server, nursery, lockstep=True)
    await server.send_to(stuck.id, "x", b"blocks the writer")
    start = trio.current_time()
    async with trio.open_nursery() as inner:
        inner.start_soon(server.shutdown, 5)
        assert await polite.wait_closed() == (1001, "server shutting down")
    assert trio.current_time() - start <= 5 + 2
    await wait_until(lambda: len(disconnected) == 2)
    assert {d[0] for d in disconnected} == {polite.id, stuck.id}
    assert all(d[1] == 1001 and d[2] == "shutdown" for d in disconnected)


# -- limits ------------------------------------------------------------------------------


async def test_oversized_message_closes_with_1009(start_server: StartServer) -> None:
    server, address = await start_server(max_message_size=1000)
    a = await RawClient.connect(address)
    await a.send(Message("root", "big", "", "", b"x" * 2000))
    code, _ = await a.wait_closed()
    assert code == CloseCode.MESSAGE_TOO_BIG
    await wait_until(lambda: not server.connections)


# trio-websocket (wsproto) reads such a frame incrementally and closes only
# once max_message_size bytes actually arrived; nothing is allocated either.
@pytest.mark.native_only
async def test_length_claiming_gigabytes_is_refused_before_allocation(
    start_server: StartServer,
) -> None:
    _, address = await start_server()
    a = await RawClient.connect(address)
    # A masked binary frame header claiming 2**62 bytes, then nothing.
    await a.send_raw(b"\x82\xff" + (2**62).to_bytes(8, "big") + b"\x00\x00\x00\x00")
    code, _ = await a.wait_closed()
    assert code == CloseCode.MESSAGE_TOO_BIG


async def test_long_fields_are_malformed(start_server: StartServer) -> None:
    server, address = await start_server(max_field_length=40, root_notices=False)
    a = await RawClient.connect(address)
    await a.send(Message("r" * 41, "join"))
    await a.expect_nothing()
    assert server.metrics.frames_dropped["malformed"] == 1
    assert await server.rooms() == ["root"]
    # The limit counts bytes: 14 characters, but 42 bytes of UTF-8.
    await a.send(Message("\u20ac" * 14, "join"))
    await a.expect_nothing()
    assert server.metrics.frames_dropped["malformed"] == 2
    # It applies to each field: four of 40 bytes (160 together) pass.
    await a.send(Message("r" * 40, "join", "d" * 40, "s" * 40))
    ack = await a.recv()
    assert (ack.room, ack.event) == ("r" * 40, "join_ack")
    assert server.metrics.frames_dropped["malformed"] == 2


async def test_rooms_per_connection_and_members_per_room(start_server: StartServer) -> None:
    server, address = await start_server(
        max_rooms_per_connection=3, max_members_per_room=2, root_notices=False
    )
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    c = await RawClient.connect(address)
    await a.join("one")
    await a.join("two")
    await a.send(Message("three", "join"))
    await a.expect_nothing()
    await b.join("one")
    await a.recv_until("new_member")
    await c.send(Message("one", "join"))
    await c.expect_nothing()
    await a.expect_nothing()
    assert sorted(await server.members("one")) == sorted([a.id, b.id])
    assert server.metrics.frames_dropped["join_refused"] == 2


async def test_connections_per_server_and_per_address(start_server: StartServer) -> None:
    server, address = await start_server(max_connections=3, max_connections_per_address=2)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address)
    assert info.value.status == 429
    await a.close()
    await wait_until(lambda: len(server.connections) == 1)
    c = await RawClient.connect(address)
    assert {conn.id for conn in server.connections} == {b.id, c.id}

    _, address = await start_server(max_connections=1)
    d = await RawClient.connect(address)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address)
    assert info.value.status == 503
    assert d.id


async def test_connection_that_keeps_sending_malformed_frames_is_closed(
    start_server: StartServer,
) -> None:
    server, address = await start_server(max_bad_frames=3)
    a = await RawClient.connect(address)
    for _ in range(4):
        await a.send_raw(b"")  # keep the socket busy without a frame
        a.protocol.send_binary(b"\x00\x00\x00\xff garbage")
        await a._flush()
    code, reason = await a.wait_closed()
    assert code == CloseCode.POLICY_VIOLATION
    assert "malformed" in reason
    assert server.metrics.frames_dropped["malformed"] == 4


# -- pings from clients ------------------------------------------------------------------


async def read_pongs(client: RawClient, n: int) -> int:
    """Read until ``n`` pongs came, or a close frame or EOF; the pongs read."""
    pongs = 0
    while pongs < n and client.protocol.close_rcvd is None:
        try:
            data = await client.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not data:
            break
        client.protocol.receive_data(data)
        for frame in client.protocol.events_received():
            pongs += isinstance(frame, Frame) and frame.opcode is Opcode.PONG
        await client._flush_quietly()  # the echo of a close frame
    return pongs


# trio-websocket answers pings itself, before trioroom sees them (docs/operations.md).
@pytest.mark.native_only
async def test_ping_flood_is_closed_with_1008_and_others_are_unaffected(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    bystander = await RawClient.connect(address)
    flood = await RawClient.connect(address)
    answered = 0
    # 10,000 pings in batches of 50, reading the pongs as they come: a peer
    # that keeps up with its pongs is not stopped by the pending-pong bound.
    for batch in range(200):
        for i in range(50):
            flood.protocol.send_ping((batch * 50 + i).to_bytes(4, "big"))
        try:
            await flood._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        answered += await read_pongs(flood, 50)
        if flood.protocol.close_rcvd is not None:
            break
    assert answered < 10_000
    close = flood.protocol.close_rcvd
    assert close is not None and (close.code, close.reason) == (1008, "ping flood")
    await wait_until(lambda: server.metrics.disconnects["ping_flood"] == 1)
    await bystander.join("calm")
    assert server.connection(bystander.id) is not None


async def test_a_client_that_pings_like_a_client_is_always_answered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=None, root_notices=False)
    client = await memory_client(server, nursery)
    # A burst at connect, then one ping a second for ten minutes.
    for i in range(50):
        client.protocol.send_ping(i.to_bytes(4, "big"))
    await client._flush()
    assert await read_pongs(client, 50) == 50
    for i in range(600):
        client.protocol.send_ping(i.to_bytes(4, "big"))
        await client._flush()
        assert await read_pongs(client, 1) == 1
        await trio.sleep(1)
    assert server.connection(client.id) is not None
    assert server.metrics.disconnects["ping_flood"] == 0


@pytest.mark.parametrize("off", [0, None])
async def test_ping_rate_limit_zero_or_none_turns_it_off(
    off: float | None, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_rate_limit=off, ping_burst=1, ping_interval=None)
    client = await memory_client(server, nursery)
    for i in range(100):
        client.protocol.send_ping(i.to_bytes(4, "big"))
        await client._flush()
        assert await read_pongs(client, 1) == 1
    assert server.connection(client.id) is not None


# -- slow consumers (real sockets) ---------------------------------------------------------


async def test_one_stuck_client_does_not_delay_fifty_readers(nursery: trio.Nursery) -> None:
    queue_bytes = 1 << 20
    server = Server(
        root_notices=False,
        queue_bytes=queue_bytes,
        queue_frames=64,
        rate_limit=1e6,
        rate_burst=1_000_000,
    )
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)

    # The stuck client advertises a tiny receive window and never reads.
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, port))
    stuck = await RawClient.connect(trio.SocketStream(sock))
    # Its ID comes from the root join_ack; join the room without reading more.
    await stuck.send(Message("room", "join"))

    readers = [await RawClient.connect((host, port)) for _ in range(50)]
    for reader in readers:
        await reader.join("room")
    sender = await RawClient.connect((host, port))
    await sender.join("room")
    count, payload = 600, b"p" * 16_000
    stuck_conn = server.connection(stuck.id)
    assert stuck_conn is not None
    peak = 0
    received: dict[str, list[int]] = {r.id: [] for r in readers}

    async def read_all(reader: RawClient) -> None:
        while len(received[reader.id]) < count:
            msg = await reader.recv()
            if msg.event == "blob":
                assert msg.src == sender.id
                received[reader.id].append(int(msg.payload[:6]))

    async with trio.open_nursery() as inner:
        for reader in readers:
            inner.start_soon(read_all, reader)
        for i in range(count):
            await sender.send(Message("room", "blob", "", "", b"%06d" % i + payload))
            peak = max(peak, stuck_conn.queued_bytes)
    assert all(seq == list(range(count)) for seq in received.values())
    await wait_until(lambda: server.connection(stuck.id) is None)
    assert stuck_conn.close_code == CloseCode.SLOW_CONSUMER
    assert server.metrics.disconnects["slow_consumer"] == 1
    assert peak <= queue_bytes
    assert len(server.connections) == 51


# -- hostile input (real sockets) ------------------------------------------------------------


async def test_fuzzing_a_live_server_leaves_it_serving(
    start_server: StartServer, engine: str
) -> None:
    import random

    server, address = await start_server(root_notices=False, max_bad_frames=1000)
    rng = random.Random(1234)
    bystander_a = await RawClient.connect(address)
    bystander_b = await RawClient.connect(address)
    await bystander_a.join("calm")
    await bystander_b.join("calm")

    async def attack(kind: str) -> None:
        client = await RawClient.connect(address)
        if kind == "random-bytes":
            await client.send_raw(rng.randbytes(5000))
        elif kind == "truncated":
            for n in range(0, 40, 3):
                frame = Message("calm", "chat", "", "", b"payload").encode()
                client.protocol.send_binary(frame[:n])
            await client._flush()
        elif kind == "huge-prefix":
            client.protocol.send_binary(b"\xff\xff\xff\xff" + bytes(16))
            await client._flush()
        elif kind == "text":
            await client.send_text(Message("calm", "join").encode())
            assert (await client.recv_until("join_ack")).room == "calm"
            await client.leave("calm")
        elif kind == "fragmented":
            data = Message("calm", "join").encode()
            client.protocol.send_binary(data[:7], fin=False)
            client.protocol.send_continuation(data[7:15], fin=False)
            client.protocol.send_continuation(data[15:], fin=True)
            await client._flush()
            assert (await client.recv_until("join_ack")).room == "calm"
            await client.leave("calm")
        elif kind == "ping-flood":
            for i in range(2000):
                client.protocol.send_ping(i.to_bytes(4, "big"))
            await client._flush()
        elif kind == "bad-utf8":
            raw = b"\x00\x00\x00\x02\xc3\x28" + bytes(16)
            client.protocol.send_binary(raw)
            await client._flush()
        elif kind == "bad-opcode":
            await client.send_raw(b"\x83\x80\x00\x00\x00\x00")
        with trio.move_on_after(5):
            await client.wait_closed()
        await client.stream.aclose()

    kinds = [
        "random-bytes",
        "truncated",
        "huge-prefix",
        "text",
        "fragmented",
        "ping-flood",
        "bad-utf8",
        "bad-opcode",
    ]
    for round_ in range(3):
        async with trio.open_nursery() as nursery:
            for kind in kinds:
                nursery.start_soon(attack, kind)
            for i in range(20):
                await bystander_a.send(Message("calm", "chat", "", "", f"{round_}-{i}"))
        for i in range(20):
            msg = await bystander_b.recv_until("chat")
            assert msg == Message("calm", "chat", "", bystander_a.id, f"{round_}-{i}".encode())
    await wait_until(lambda: len(server.connections) == 2)
    fresh = await RawClient.connect(address)
    await fresh.join("calm")
    await fresh.send(Message("calm", "chat", "", "", b"after"))
    assert (await bystander_a.recv_until("chat")).payload == b"after"
    assert server.metrics.frames_dropped["malformed"] > 0
    if engine == "native":
        assert server.metrics.disconnects["ping_flood"] >= 1


# -- operations ------------------------------------------------------------------------------


@pytest.mark.not_asgi(reason=HYPERCORN_CLIENT_CLOSE)
async def test_close_codes_chosen_by_clients_are_bucketed(start_server: StartServer) -> None:
    # A client picks any code in 3000-4999: each must not become its own series.
    server, address = await start_server(root_notices=False)
    for code in (4321, 3999, 4999, 1000, 4001):
        client = await RawClient.connect(address)
        client.protocol.send_close(code, "bye")
        await client._flush()
        await client.wait_closed()
        await client.stream.aclose()
    await wait_until(lambda: server.metrics.connections_closed == 5)
    # A code the application chose itself is kept.
    kicked = await RawClient.connect(address)
    assert await server.kick(kicked.id, 4100, "custom")
    await wait_until(lambda: server.metrics.connections_closed == 6)
    assert dict(server.metrics.close_codes) == {1000: 1, 4001: 1, 4100: 1, "4xxx": 2, "3xxx": 1}
    families = PrometheusCollector(server.metrics, server.stats).collect()
    family = next(f for f in families if f.name == "trioroom_close_codes")
    assert sorted(sample.labels["code"] for sample in family.samples) == [
        "1000",
        "3xxx",
        "4001",
        "4100",
        "4xxx",
    ]


async def test_close_room_tells_members_and_removes_it(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("doomed")
    await b.join("doomed")
    assert await server.close_room("doomed") == 2
    assert (await a.recv_until("leave_ack")).room == "doomed"
    assert (await b.recv_until("leave_ack")).room == "doomed"
    assert "doomed" not in await server.rooms()
    assert server.connection(a.id) is not None


@pytest.mark.not_asgi(reason=HYPERCORN_CLIENT_CLOSE)
async def test_lifecycle_hooks_in_order(start_server: StartServer) -> None:
    server = Server(root_notices=False)
    events: list[tuple[str, ...]] = []

    @server.on_connect
    async def connected(conn: Connection) -> None:
        events.append(("connect", conn.id))

    @server.on_join
    async def joined(conn: Connection, room: str) -> None:
        events.append(("join", conn.id, room))

    @server.on_leave
    async def left(conn: Connection, room: str) -> None:
        events.append(("leave", conn.id, room))

    @server.on_disconnect
    async def disconnected(conn: Connection) -> None:
        events.append(("disconnect", conn.id, conn.disconnect_reason, str(conn.close_code)))

    _, address = await start_server(server)
    a = await RawClient.connect(address)
    await a.join("lobby")
    await a.leave("lobby")
    await a.join("other")
    await a.close()
    await wait_until(lambda: len(events) == 8)
    assert events == [
        ("join", a.id, "root"),
        ("connect", a.id),
        ("join", a.id, "lobby"),
        ("leave", a.id, "lobby"),
        ("join", a.id, "other"),
        ("leave", a.id, "other"),
        ("leave", a.id, "root"),
        ("disconnect", a.id, "peer", "1000"),
    ]


# -- the native transport ----------------------------------------------------------


class RecordingStream(trio.abc.Stream):
    """Records what is sent; never receives anything."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("not reached")  # pragma: no cover

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_wake_ups_alone_are_not_written() -> None:
    """A writer woken with nothing to send must not call send_all(b"").

    trio's send_all(b"") is a checkpoint: a connection closing at that moment
    looked like a write cut in half, and its close frame (with any error
    queued before it) was never sent.
    """
    stream = RecordingStream()
    transport = StreamTransport(stream, ServerProtocol())
    await transport.write([b""])
    await transport.write([b"", b""])
    assert stream.sent == []
    frame = binary_frame(b"x")
    await transport.write([b"", frame])
    assert stream.sent == [frame]
