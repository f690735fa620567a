"""The trioroom.v1 extension: sessions and resumption, requests, error events (issue 9)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest
import trio
import trio.testing

from trioroom import Connection, Message, RequestError, Server
from trioroom.extension import UNNUMBERED

from .wire import RawClient, StartServer, memory_client, wait_until

V1 = ["trioroom.v1"]


class ExtendedClient:
    """A raw client that speaks the extension: counts numbered frames, resumes."""

    def __init__(self, raw: RawClient, session: dict[str, Any]) -> None:
        self.raw = raw
        self.session = session
        self.id = session["id"]
        self.token = session["token"]
        self.received = 0  # numbered frames seen on this session

    @classmethod
    async def connect(cls, address: Any, query: str = "") -> tuple[ExtendedClient, list[Message]]:
        raw = await RawClient.connect(
            address, path="/ws" + query, subprotocols=V1, read_root_ack=False
        )
        preamble = []
        while True:
            msg = await raw.recv()
            preamble.append(msg)
            if msg.event == "trioroom.session":
                break
        client = cls(raw, json.loads(msg.payload))
        ack = await client.recv()
        assert (ack.room, ack.event, ack.src) == ("root", "join_ack", client.id)
        raw.id = client.id
        return client, preamble

    async def recv(self) -> Message:
        msg = await self.raw.recv()
        if msg.event not in UNNUMBERED:
            self.received += 1
        return msg

    async def recv_until(self, event: str) -> Message:
        while True:
            msg = await self.recv()
            if msg.event == event:
                return msg

    async def request(self, room: str, event: str, payload: bytes, ref: int) -> Message:
        await self.raw.send(Message(room, event, "", f"?{ref}", payload))
        while True:
            msg = await self.recv()
            if msg.event in ("trioroom.reply", "trioroom.error") and msg.dst == f"?{ref}":
                return msg


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 whose connections can be cut abruptly (RST both ways)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sockets: list[trio.SocketStream] = []

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[:2])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, inbound: trio.SocketStream) -> None:
        outbound = await trio.open_tcp_stream(*self.target)
        self.sockets += [inbound, outbound]

        async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
            try:
                while data := await src.receive_some(65536):
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, inbound, outbound)
            nursery.start_soon(pump, outbound, inbound)

    def cut(self) -> None:
        for stream in self.sockets:
            sock = stream.socket
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            sock.close()
        self.sockets.clear()


# -- negotiation ------------------------------------------------------------------------------


async def test_plain_client_sees_no_extension_traffic(start_server: StartServer) -> None:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    server = Server(
        authorize_join=authorize_join, rate_limit=1000, rate_burst=5, rate_limit_policy="drop"
    )

    @server.on("boom")
    async def boom(conn: Connection, msg: Message) -> None:
        raise RequestError("nope", "bad")

    _, address = await start_server(server)
    plain = await RawClient.connect(address, read_root_ack=False)
    first = await plain.recv()
    assert (first.room, first.event) == ("root", "join_ack")
    plain.id = first.src
    assert plain.protocol.subprotocol is None
    # Everything that produces an error event for an extended client:
    await plain.send(Message("vip", "join"))
    await plain.send(Message("root", "boom", "", "?1", b""))
    await plain.send(Message("nowhere", "chat", "", "?2", b""))
    await plain.send(Message("root", "x", "no-such-id", "?3", b""))
    await plain.send(Message("root", "join_ack", "", "", b""))
    for _ in range(10):
        await plain.send(Message("root", "x", "no-such-id", "", b""))
    await trio.sleep(0.2)  # let the bucket refill for the marker
    await plain.expect_nothing()
    assert server.metrics.frames_dropped["rate_limited"] > 0


async def test_extended_client_gets_a_session_before_the_root_join_ack(
    start_server: StartServer,
) -> None:
    server, address = await start_server()
    client, preamble = await ExtendedClient.connect(address)
    assert client.raw.protocol.subprotocol == "trioroom.v1"
    assert [m.event for m in preamble] == ["trioroom.session"]
    assert len(client.token) >= 32
    assert client.session["resume_window"] == server.settings.resume_window
    conn = server.connection(client.id)
    assert conn is not None and conn.extended


async def test_other_subprotocols_are_not_refused(start_server: StartServer) -> None:
    _, address = await start_server()
    raw = await RawClient.connect(address, subprotocols=["chat"])
    assert raw.protocol.subprotocol is None


# -- requests and errors ------------------------------------------------------------------------


async def test_requests_get_the_handler_value_or_its_error(start_server: StartServer) -> None:
    server = Server()

    @server.on("add")
    async def add(conn: Connection, msg: Message) -> Any:
        numbers = json.loads(msg.payload)
        if not numbers:
            raise RequestError("nothing to add", "empty")
        return {"sum": sum(numbers)}

    @server.on("crash")
    async def crash(conn: Connection, msg: Message) -> None:
        raise KeyError("secret internals")

    @server.on("echo")
    async def echo(conn: Connection, msg: Message) -> bytes:
        return msg.payload

    _, address = await start_server(server)
    client, _ = await ExtendedClient.connect(address)
    reply = await client.request("root", "add", b"[1,2,3]", 1)
    assert (reply.event, json.loads(reply.payload)) == ("trioroom.reply", {"sum": 6})
    error = await client.request("root", "add", b"[]", 2)
    assert error.event == "trioroom.error"
    assert json.loads(error.payload) == {
        "code": "empty",
        "message": "nothing to add",
        "event": "add",
    }
    error = await client.request("root", "crash", b"", 3)
    body = json.loads(error.payload)
    assert body["code"] == "handler_error" and "secret" not in body["message"]
    assert (await client.request("root", "echo", b"\x00\xff", 4)).payload == b"\x00\xff"


async def test_joins_broadcasts_and_dms_as_requests(start_server: StartServer) -> None:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    _, address = await start_server(authorize_join=authorize_join, root_notices=False)
    client, _ = await ExtendedClient.connect(address)
    other = await RawClient.connect(address)
    await client.raw.send(Message("lobby", "join", "", "?1"))
    assert (await client.recv()).event == "join_ack"
    assert (await client.recv()) == Message("lobby", "trioroom.reply", "?1", "", b"")
    refused = await client.request("vip", "join", b"", 2)
    assert refused.event == "trioroom.error"
    assert json.loads(refused.payload)["code"] == "join_refused"
    assert (await client.request("lobby", "chat", b"hi", 3)).event == "trioroom.reply"
    not_member = await client.request("elsewhere", "chat", b"hi", 4)
    assert json.loads(not_member.payload)["code"] == "not_a_member"
    await client.raw.send(Message("root", "dm", other.id, "?5", b"x"))
    assert (await client.recv()) == Message("root", "trioroom.reply", "?5", "", b"")
    assert (await other.recv()) == Message("root", "dm", other.id, client.id, b"x")
    await client.raw.send(Message("root", "dm", "no-such-id", "?6", b"x"))
    lost = await client.recv()
    assert (lost.event, lost.dst) == ("trioroom.error", "?6")
    assert json.loads(lost.payload)["code"] == "unknown_destination"


async def test_request_timeout_and_rate_limit_errors(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(
        request_timeout=5,
        rate_limit=1,
        rate_burst=2,
        rate_limit_policy="drop",
        ping_interval=None,
    )

    @server.on("slow")
    async def slow(conn: Connection, msg: Message) -> None:
        await trio.sleep(60)

    raw = await memory_client(server, nursery, subprotocols=V1, read_root_ack=False)
    while (await raw.recv()).event != "join_ack":
        pass
    start = trio.current_time()
    await raw.send(Message("root", "slow", "", "?1", b""))
    error = await raw.recv()
    assert json.loads(error.payload)["code"] == "timeout" and error.dst == "?1"
    assert 5 <= trio.current_time() - start < 6
    for _ in range(3):  # the bucket holds two tokens
        await raw.send(Message("root", "x", "", "", b""))
    assert json.loads((await raw.recv()).payload)["code"] == "rate_limited"


# trio-websocket closes an oversized message with 1009 itself, before trioroom sees it.
@pytest.mark.native_only
async def test_oversized_message_error_precedes_the_close(start_server: StartServer) -> None:
    _, address = await start_server(max_message_size=1000)
    client, _ = await ExtendedClient.connect(address)
    await client.raw.send(Message("root", "big", "", "", b"x" * 5000))
    error = await client.recv_until("trioroom.error")
    assert json.loads(error.payload)["code"] == "message_too_big"
    assert (await client.raw.wait_closed())[0] == 1009


# -- resumption ------------------------------------------------------------------------------------


async def test_resume_after_the_tcp_connection_is_cut_mid_stream(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server, address = await start_server(root_notices=False, rate_limit=1e6, rate_burst=10**6)
    proxy = CuttableProxy(address)
    proxy_address = await nursery.start(proxy.run)
    client, _ = await ExtendedClient.connect(proxy_address)
    await client.raw.send(Message("lobby", "join"))
    await client.recv_until("join_ack")
    sender = await RawClient.connect(address)
    await sender.join("lobby")
    watcher = await RawClient.connect(address)
    await watcher.join("lobby")
    got: list[int] = []
    total = 400
    cut_done = trio.Event()

    async def send_all() -> None:
        for i in range(total):
            await sender.send(Message("lobby", "n", "", "", str(i)))
            if i == total // 2:
                proxy.cut()
                cut_done.set()
            await trio.lowlevel.checkpoint()

    async def read_until_cut() -> None:
        try:
            while True:
                msg = await client.recv()
                if msg.event == "n":
                    got.append(int(msg.payload))
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async with trio.open_nursery() as inner:
        inner.start_soon(send_all)
        inner.start_soon(read_until_cut)
    assert cut_done.is_set()
    await wait_until(lambda: (c := server.connection(client.id)) is not None and c.suspended)
    assert len(got) < total
    resumed = await RawClient.connect(
        proxy_address,
        path=f"/ws?resume={client.token}&last={client.received}",
        subprotocols=V1,
        read_root_ack=False,
    )
    client.raw = resumed
    hello = await client.recv()
    assert hello.event == "trioroom.resumed"
    assert json.loads(hello.payload)["id"] == client.id
    while len(got) < total:
        msg = await client.recv()
        if msg.event == "n":
            got.append(int(msg.payload))
    assert got == list(range(total)), "every message once, in order"
    # Nobody saw the client leave, and it is still the same member.
    await watcher.sync()
    seen = [Message.decode(f.data).event for f in watcher.frames]
    assert "member_left" not in seen
    assert sorted(await server.members("lobby")) == sorted([client.id, sender.id, watcher.id])
    await client.raw.send(Message("lobby", "chat", "", "", b"back"))
    assert (await watcher.recv_until("chat")).src == client.id


async def test_after_the_window_the_client_is_told_and_others_saw_it_leave(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False, resume_window=0.2)
    client, _ = await ExtendedClient.connect(address)
    await client.raw.send(Message("lobby", "join"))
    await client.recv_until("join_ack")
    watcher = await RawClient.connect(address)
    await watcher.join("lobby")
    client.raw.reset()
    left = await watcher.recv_until("member_left")
    assert left.payload == client.id.encode()
    await wait_until(lambda: server.connection(client.id) is None)
    fresh, preamble = await ExtendedClient.connect(
        address, query=f"?resume={client.token}&last={client.received}"
    )
    assert preamble[0].event == "trioroom.not_resumed"
    assert json.loads(preamble[0].payload) == {"reason": "expired"}
    assert fresh.id != client.id
    await fresh.raw.send(Message("lobby", "join"))
    await fresh.recv_until("join_ack")
    assert (await watcher.recv_until("new_member")).payload == fresh.id.encode()


@pytest.mark.parametrize(
    ("query", "reason"),
    [("?resume=nonsense&last=0", "unknown_token")],
)
async def test_unknown_token_is_refused_explicitly(
    start_server: StartServer, query: str, reason: str
) -> None:
    _, address = await start_server()
    fresh, preamble = await ExtendedClient.connect(address, query=query)
    assert [m.event for m in preamble] == ["trioroom.not_resumed", "trioroom.session"]
    assert json.loads(preamble[0].payload) == {"reason": reason}
    assert fresh.id


async def test_token_is_bound_to_the_identity_that_authenticated(
    start_server: StartServer,
) -> None:
    async def authorize(request: Any) -> Any:
        return {"user": request.query.get("user")}

    server, address = await start_server(authorize=authorize)
    ann, _ = await ExtendedClient.connect(address, query="?user=ann")
    ann.raw.reset()
    await wait_until(lambda: (c := server.connection(ann.id)) is not None and c.suspended)
    bob, preamble = await ExtendedClient.connect(
        address, query=f"?user=bob&resume={ann.token}&last=0"
    )
    assert json.loads(preamble[0].payload) == {"reason": "identity_mismatch"}
    assert bob.id != ann.id
    again = await RawClient.connect(
        address,
        path=f"/ws?user=ann&resume={ann.token}&last={ann.received}",
        subprotocols=V1,
        read_root_ack=False,
    )
    hello = await again.recv()
    assert hello.event == "trioroom.resumed"
    assert json.loads(hello.payload)["id"] == ann.id


async def test_acknowledged_frames_are_released(start_server: StartServer) -> None:
    server, address = await start_server()
    client, _ = await ExtendedClient.connect(address)
    for _ in range(5):
        await client.raw.send(Message("root", "echo", client.id, "", b"x" * 100))
        await client.recv()
    conn = server.connection(client.id)
    assert conn is not None and conn.replay is not None
    assert conn.replay.sent == client.received == 6
    assert conn.replay.buffered_bytes > 500
    await client.raw.send(Message("root", "trioroom.ack", "", "", str(client.received)))
    await client.raw.sync()
    # Frames 1-6 are released; only the marker sync() sent to itself remains.
    assert conn.replay.since(5) is None
    assert len(conn.replay.since(6) or []) == 1
    assert conn.replay.buffered_bytes < 200


async def test_extension_event_names_cannot_be_forged_or_broadcast(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    extended, _ = await ExtendedClient.connect(address)
    plain = await RawClient.connect(address)
    await plain.send(Message("root", "trioroom.resumed", "", "", b'{"id":"x"}'))
    await plain.send(Message("root", "trioroom.ack", "", "", b"5"))
    await plain.sync()
    await extended.raw.expect_nothing()
    assert server.metrics.frames_dropped["malformed"] == 1


async def test_a_request_cut_off_by_the_socket_is_answered_after_resuming(
    start_server: StartServer,
) -> None:
    entered = trio.Event()
    server = Server()

    @server.on("slow")
    async def slow(conn: Connection, msg: Message) -> None:
        entered.set()
        await trio.sleep_forever()

    _, address = await start_server(server)
    client, _ = await ExtendedClient.connect(address)
    await client.raw.send(Message("root", "slow", "", "?9", b""))
    await entered.wait()
    # The reader is inside the handler, so the server cannot notice the drop
    # by itself (only the heartbeat would): the resume replaces the socket.
    client.raw.reset()
    client.raw = await RawClient.connect(
        address,
        path=f"/ws?resume={client.token}&last={client.received}",
        subprotocols=V1,
        read_root_ack=False,
    )
    assert (await client.recv()).event == "trioroom.resumed"
    error = await client.recv()
    assert (error.event, error.dst) == ("trioroom.error", "?9")
    assert json.loads(error.payload)["code"] == "cancelled"


async def test_requests_refused_before_handling_still_get_their_ref(
    start_server: StartServer,
) -> None:
    _, address = await start_server(
        max_field_length=40, rate_limit=0.001, rate_burst=2, rate_limit_policy="drop"
    )
    client, _ = await ExtendedClient.connect(address)
    too_long = await client.request("r" * 41, "join", b"", 1)
    assert json.loads(too_long.payload)["code"] == "malformed"
    await client.raw.send(Message("root", "x", "", "?2", b""))
    await client.raw.send(Message("root", "x", "", "?3", b""))
    assert (await client.recv()).dst == "?2"  # the reply to the broadcast
    limited = await client.recv()
    assert (limited.event, limited.dst) == ("trioroom.error", "?3")
    assert json.loads(limited.payload)["code"] == "rate_limited"
