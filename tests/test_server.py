"""Behaviour of the server over real sockets, row by row of PROTOCOL.md §3 to §5 and §7."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
import trio

from trioroom import Connection, Message, Reject, Request, Server
from trioroom.protocol import RESERVED_EVENTS

from .wire import HandshakeRejected, RawClient, StartServer, wait_until


def members(msg: Message) -> list[str]:
    value = json.loads(msg.payload)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


# -- §3 connect and identity ---------------------------------------------------


async def test_first_frame_is_root_join_ack_with_own_id(start_server: StartServer) -> None:
    _, address = await start_server()
    a = await RawClient.connect(address, read_root_ack=False)
    ack = await a.recv()
    assert (ack.room, ack.event, ack.dst) == ("root", "join_ack", "")
    assert len(ack.src) == 36 and uuid.UUID(ack.src).version == 4
    assert members(ack) == [ack.src]
    assert ack.payload == json.dumps([ack.src], separators=(",", ":")).encode()


async def test_others_in_root_get_new_member(start_server: StartServer) -> None:
    _, address = await start_server()
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    notice = await a.recv()
    assert notice == Message("root", "new_member", "", "", b.id.encode())
    # B's list includes itself (first) and A.
    await b.expect_nothing()


async def test_root_join_ack_lists_existing_members(start_server: StartServer) -> None:
    _, address = await start_server()
    a = await RawClient.connect(address)
    b = await RawClient.connect(address, read_root_ack=False)
    ack = await b.recv()
    assert members(ack) == [ack.src, a.id]


async def test_root_notices_can_be_turned_off(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.expect_nothing()
    await b.close()
    await a.expect_nothing()


async def test_root_member_list_is_limited(start_server: StartServer) -> None:
    _, address = await start_server(root_member_list_limit=3, root_notices=False)
    clients = [await RawClient.connect(address) for _ in range(6)]
    last = await RawClient.connect(address, read_root_ack=False)
    ack = await last.recv()
    ids = members(ack)
    assert ids[0] == ack.src
    assert len(ids) == 3
    assert set(ids[1:]) <= {c.id for c in clients}


# -- §4 join and leave -----------------------------------------------------------


async def test_join_creates_room_and_acks_with_members(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    ack = await a.join("lobby")
    assert ack == Message("lobby", "join_ack", "", a.id, json.dumps([a.id]).replace(" ", ""))
    assert await server.rooms() == ["root", "lobby"]
    ack_b = await b.join("lobby")
    assert members(ack_b) == [b.id, a.id]
    assert await a.recv() == Message("lobby", "new_member", "", "", b.id.encode())
    assert await server.members("lobby") == [a.id, b.id]


async def test_new_member_goes_only_to_co_members(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    a, b, c = [await RawClient.connect(address) for _ in range(3)]
    await a.join("lobby")
    await c.join("other")
    await b.join("lobby")
    assert (await a.recv()).event == "new_member"
    await c.expect_nothing()


async def test_repeated_join_answers_join_ack_again_without_notice(
    start_server: StartServer,
) -> None:
    _, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    await a.recv_until("new_member")
    again = await b.join("lobby")
    # Only the joiner: b has the list already (issue 14, a repeated join is cheap).
    assert members(again) == [b.id]
    await a.expect_nothing()


async def test_leave_acks_and_tells_remaining_members(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    await a.recv_until("new_member")
    ack = await a.leave("lobby")
    assert ack == Message("lobby", "leave_ack", "", a.id, a.id.encode())
    assert await b.recv() == Message("lobby", "member_left", "", "", a.id.encode())
    assert await server.members("lobby") == [b.id]
    await b.leave("lobby")
    assert await server.rooms() == ["root"]
    await a.expect_nothing()


async def test_leave_of_a_room_not_joined_is_still_acked(start_server: StartServer) -> None:
    server, address = await start_server()
    a = await RawClient.connect(address)
    ack = await a.leave("nowhere")
    assert ack == Message("nowhere", "leave_ack", "", a.id, a.id.encode())
    assert await server.rooms() == ["root"]


async def test_disconnect_notifies_only_rooms_it_was_in(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a, b, c = [await RawClient.connect(address) for _ in range(3)]
    await a.join("lobby")
    await b.join("lobby")
    await c.join("other")
    await a.recv_until("new_member")
    await b.close()
    assert await a.recv() == Message("lobby", "member_left", "", "", b.id.encode())
    await c.expect_nothing()
    await wait_until(lambda: len(server.connections) == 2)
    assert sorted(await server.rooms()) == ["lobby", "other", "root"]


async def test_disconnect_sends_member_left_on_root_with_notices(start_server: StartServer) -> None:
    _, address = await start_server()
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.recv_until("new_member")
    b.reset()
    assert await a.recv() == Message("root", "member_left", "", "", b.id.encode())


async def test_empty_rooms_are_removed_when_last_member_disconnects(
    start_server: StartServer,
) -> None:
    server, address = await start_server()
    a = await RawClient.connect(address)
    await a.join("lobby")
    await a.close()
    await wait_until(lambda: not server.connections)
    assert await server.rooms() == []


# -- §5 custom events ---------------------------------------------------------------


async def test_broadcast_excludes_sender_and_rewrites_src(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    a, b, c = [await RawClient.connect(address) for _ in range(3)]
    for client in (a, b, c):
        await client.join("lobby")
    await a.sync()
    await b.sync()
    a.frames.clear()
    b.frames.clear()
    await a.send(Message("lobby", "chat", "", "spoofed-id", b"hi"))
    for other in (b, c):
        got = await other.recv_until("chat")
        assert got == Message("lobby", "chat", "", a.id, b"hi")
    await a.expect_nothing()


async def test_broadcast_reaches_the_same_bytes_as_the_protocol_example(
    start_server: StartServer,
) -> None:
    _, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    await a.send(Message("lobby", "chat", "", a.id, b"hi"))
    frame = await b.recv_frame()
    assert bytes(frame.data) == Message("lobby", "chat", "", a.id, b"hi").encode()
    assert len(frame.data) == 67


async def test_broadcast_to_unknown_room_or_as_non_member_is_dropped(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await b.join("lobby")
    await a.send(Message("nowhere", "chat", "", "", b"x"))
    await a.send(Message("lobby", "chat", "", "", b"x"))
    await a.sync()
    await b.expect_nothing()
    assert server.metrics.frames_dropped["not_a_member"] == 2


async def test_direct_message_keeps_room_and_rewrites_src(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    c = await RawClient.connect(address)
    # A direct message's room is root or a room the sender is in.
    await a.join("some-room")
    await a.send(Message("some-room", "whisper", b.id, "spoofed", b"psst"))
    assert await b.recv() == Message("some-room", "whisper", b.id, a.id, b"psst")
    await c.expect_nothing()
    await a.expect_nothing()


async def test_direct_message_to_unknown_id_is_dropped(start_server: StartServer) -> None:
    server, address = await start_server()
    a = await RawClient.connect(address)
    await a.send(Message("root", "whisper", str(uuid.uuid4()), "", b"psst"))
    await a.expect_nothing()
    assert server.metrics.frames_dropped["unknown_dst"] == 1


async def test_handler_runs_instead_of_broadcast(start_server: StartServer) -> None:
    server = Server(root_notices=False)
    seen: list[tuple[str, Message]] = []

    @server.on("ping")
    async def ping(conn: Connection, msg: Message) -> None:
        seen.append((conn.id, msg))
        await conn.send("pong", msg.payload, room=msg.room)

    _, address = await start_server(server)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    await a.send(Message("lobby", "ping", "", "spoofed", b"1"))
    assert await a.recv_until("pong") == Message("lobby", "pong", "", "", b"1")
    assert seen == [(a.id, Message("lobby", "ping", "", a.id, b"1"))]
    await b.expect_nothing()


async def test_handler_reads_request_headers_and_query_of_an_open_connection(
    start_server: StartServer,
) -> None:
    server = Server(root_notices=False)

    @server.on("whoami")
    async def whoami(conn: Connection, msg: Message) -> None:
        headers = conn.request.headers
        value = f"{headers['X-Team']}|{headers.get_all('X-Tag')}|{conn.request.query}"
        await conn.send("you", value)

    _, address = await start_server(server)
    a = await RawClient.connect(
        address,
        path="/ws?team=blue",
        headers=[("X-Team", "red"), ("X-Tag", "one"), ("x-tag", "two")],
    )
    await a.send(Message("root", "whoami"))
    reply = await a.recv_until("you")
    assert reply.payload == b"red|['one', 'two']|{'team': 'blue'}"


async def test_closed_event_made_after_the_close_is_already_set(
    start_server: StartServer,
) -> None:
    server, address = await start_server()
    a = await RawClient.connect(address)
    conn = server.connection(a.id)
    assert conn is not None
    await a.close()
    await wait_until(lambda: server.connection(a.id) is None)
    with trio.fail_after(5):
        await conn.closed.wait()
    assert conn.data == {}


async def test_direct_message_wins_over_handler(start_server: StartServer) -> None:
    server = Server(root_notices=False)
    calls: list[Message] = []

    @server.on("ping")
    async def ping(conn: Connection, msg: Message) -> None:
        calls.append(msg)

    _, address = await start_server(server)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.send(Message("root", "ping", b.id, "", b"dm"))
    assert await b.recv() == Message("root", "ping", b.id, a.id, b"dm")
    assert calls == []


async def test_clients_cannot_send_reserved_events(start_server: StartServer) -> None:
    server, address = await start_server()
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.recv_until("new_member")
    for event in ("join_ack", "new_member", "member_left", "leave_ack"):
        await a.send(Message("root", event, "", "", b"forged"))
    await a.sync()
    await b.expect_nothing()
    assert server.metrics.frames_dropped["malformed"] == 4


async def test_fifo_per_sender_and_recipient_across_broadcasts_and_dms(
    start_server: StartServer,
) -> None:
    _, address = await start_server(root_notices=False, rate_limit=10_000, rate_burst=10_000)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    for i in range(300):
        if i % 3:
            await a.send(Message("lobby", "n", "", "", str(i)))
        else:
            await a.send(Message("lobby", "n", b.id, "", str(i)))
    got = [int((await b.recv_until("n")).payload) for _ in range(300)]
    assert got == list(range(300))


# -- server API -----------------------------------------------------------------------


def test_reserved_and_duplicate_handler_names_are_refused() -> None:
    server = Server()
    for event in RESERVED_EVENTS:
        with pytest.raises(ValueError, match="reserved"):
            server.on(event)
    with pytest.raises(ValueError, match="non-empty"):
        server.on("")

    @server.on("chat")
    async def chat(conn: Connection, msg: Message) -> None:
        pass

    with pytest.raises(ValueError, match="already registered"):
        server.on("chat")


async def test_handler_that_raises_is_logged_and_connection_stays_up(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server()

    @server.on("boom")
    async def boom(conn: Connection, msg: Message) -> None:
        raise RuntimeError("kaboom")

    _, address = await start_server(server)
    a = await RawClient.connect(address)
    with caplog.at_level(logging.ERROR, logger="trioroom"):
        await a.send(Message("root", "boom", "", "", b""))
        await a.sync()
    (record,) = [r for r in caplog.records if "boom" in r.getMessage()]
    assert record.conn_id == a.id  # type: ignore[attr-defined]
    assert record.event == "boom"  # type: ignore[attr-defined]
    assert "kaboom" in caplog.text
    assert server.metrics.handler_errors == 1
    assert await a.join("still-here")


async def test_send_to_self_room_whole_room_and_by_id(start_server: StartServer) -> None:
    server = Server(root_notices=False)

    @server.on("fan")
    async def fan(conn: Connection, msg: Message) -> None:
        await conn.send("to-self", b"1", room=msg.room)
        await conn.broadcast(msg.room, "to-others", b"2")
        await server.emit(msg.room, "to-all", b"3")
        await server.send_to(msg.payload.decode(), "to-id", b"4")

    _, address = await start_server(server)
    a, b, c = [await RawClient.connect(address) for _ in range(3)]
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
    conn = server.connection(a.id)
    assert conn is not None and conn.rooms == {"root", "lobby"}


async def test_serve_returns_bound_address_and_runs_on_given_listeners(
    nursery: trio.Nursery,
) -> None:
    server = Server()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    addresses = await nursery.start(server.serve_listeners, listeners)
    host, port = addresses[0][:2]
    assert host == "127.0.0.1" and port > 0
    a = await RawClient.connect((host, port))
    assert a.id


async def test_tls_through_ssl_listener(nursery: trio.Nursery) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listeners = [trio.SSLListener(tcp[0], server_ctx, https_compatible=True)]
    server = Server()
    addresses = await nursery.start(server.serve_listeners, listeners)
    port = addresses[0][1]
    import trio_websocket

    async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=client_ctx) as ws:
        ack = Message.decode(await ws.get_message())
        assert (ack.room, ack.event) == ("root", "join_ack")
        assert server.connection(ack.src) is not None


@pytest.mark.native_only
async def test_plain_http_request_to_ws_path_is_refused(start_server: StartServer) -> None:
    _, address = await start_server()
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n")
    reply = await stream.receive_some(4096)
    assert reply.startswith(b"HTTP/1.1 426")


@pytest.mark.native_only
async def test_unknown_path_is_404(start_server: StartServer) -> None:
    _, address = await start_server()
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address, path="/nope")
    assert info.value.status == 404


# -- auth and origin ----------------------------------------------------------------------


async def test_authorize_rejects_with_401_before_any_frame(start_server: StartServer) -> None:
    async def authorize(request: Request) -> Any:
        if request.query.get("token") == "good":
            return {"user": "ann"}
        return None

    server = Server(authorize=authorize)

    @server.on("whoami")
    async def whoami(conn: Connection, msg: Message) -> None:
        await conn.send("you", conn.claims["user"])

    _, address = await start_server(server)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address, path="/ws?token=bad")
    assert info.value.status == 401
    assert b"Unauthorized" in info.value.body
    a = await RawClient.connect(address, path="/ws?token=good")
    await a.send(Message("root", "whoami"))
    assert (await a.recv()).payload == b"ann"
    assert server.metrics.handshakes_rejected[401] == 1


async def test_authorize_can_choose_status_and_body_and_read_cookies(
    start_server: StartServer,
) -> None:
    async def authorize(request: Request) -> Any:
        if request.cookies.get("session") != "s3cret":
            raise Reject(403, "banned")
        return True

    _, address = await start_server(authorize=authorize)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address, headers=[("Cookie", "session=nope")])
    assert (info.value.status, info.value.body.strip()) == (403, b"banned")
    assert await RawClient.connect(address, headers=[("Cookie", "a=b; session=s3cret")])


async def test_refused_join_adds_no_membership_and_no_notice(start_server: StartServer) -> None:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    server, address = await start_server(authorize_join=authorize_join, root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await b.send(Message("vip", "join"))
    await b.expect_nothing()
    assert "vip" not in await server.rooms()
    await a.send(Message("lobby", "join"))
    assert (await a.recv()).event == "join_ack"
    await b.send(Message("lobby", "chat", "", "", b"x"))
    await b.sync()
    await a.expect_nothing()


@pytest.mark.parametrize(
    ("origin", "settings", "allowed"),
    [
        (None, {}, True),
        ("http://127.0.0.1:{port}", {}, True),
        ("http://evil.example", {}, False),
        ("http://127.0.0.1:1", {}, False),
        ("https://app.example", {"allowed_origins": ["https://app.example"]}, True),
        ("https://other.example", {"allowed_origins": ["https://app.example"]}, False),
        ("http://evil.example", {"allow_all_origins": True}, True),
    ],
)
async def test_origin_policy(
    start_server: StartServer, origin: str | None, settings: dict[str, Any], allowed: bool
) -> None:
    _, address = await start_server(**settings)
    headers = [] if origin is None else [("Origin", origin.format(port=address[1]))]
    if allowed:
        assert await RawClient.connect(address, headers=headers)
    else:
        with pytest.raises(HandshakeRejected) as info:
            await RawClient.connect(address, headers=headers)
        assert info.value.status == 403


# -- §7 robustness ---------------------------------------------------------------------------


async def test_concurrent_joins_and_leaves_never_ack_a_non_member(
    start_server: StartServer,
) -> None:
    """Joins racing the removal of an emptied room: every acked member is a member."""
    server = Server(root_notices=False)
    acked: dict[str, int] = {}

    async def slow_authorize_join(conn: Connection, room: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    server.authorize_join = slow_authorize_join
    _, address = await start_server(server)
    clients = [await RawClient.connect(address) for _ in range(8)]

    async def churn(client: RawClient) -> None:
        for _ in range(25):
            await client.send(Message("hot", "join"))
            await client.send(Message("hot", "leave", client.id, client.id, client.id))
        await client.send(Message("hot", "join"))
        while True:
            msg = await client.recv()
            if msg.event == "join_ack":
                acked[client.id] = acked.get(client.id, 0) + 1
                if acked[client.id] == 26:
                    return

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(churn, client)
    assert sorted(await server.members("hot")) == sorted(c.id for c in clients)
    room = server.hub.room("hot")
    assert room is not None and len(room) == len(clients)


async def test_slow_consumer_dropped_during_broadcast_does_not_hurt_others(
    start_server: StartServer,
) -> None:
    server, address = await start_server(
        root_notices=False, queue_frames=4, rate_limit=10_000, rate_burst=10_000
    )
    sender = await RawClient.connect(address)
    stuck = await RawClient.connect(address)
    reader = await RawClient.connect(address)
    for c in (sender, stuck, reader):
        await c.join("lobby")
    await reader.sync()
    reader.frames.clear()
    payload = b"x" * 60_000
    for i in range(60):
        await sender.send(Message("lobby", "blob", "", "", payload + str(i).encode()))
        assert (await reader.recv_until("blob")).payload.endswith(str(i).encode())
    await wait_until(lambda: server.metrics.disconnects["slow_consumer"] == 1)
    assert server.connection(stuck.id) is None
    assert server.connection(reader.id) is not None
