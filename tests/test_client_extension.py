"""The Python client's side of the trioroom.v1 extension (issue 9).

Against real servers on 127.0.0.1 (``start_server`` runs each test on the
native engine and on the trio-websocket adapter); connections are cut with a
TCP proxy between the client and the server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

import trioroom
from trioroom import Connection, Message, RequestError, Server
from trioroom.client import (
    Client,
    ConnectionClosed,
    RequestFailed,
    ServerError,
    SessionLost,
)
from trioroom.testing import open_test_server

from .test_client import GatedJoins, cancel_join_in_flight, clients, sync
from .test_extension import CuttableProxy
from .wire import WAIT, StartServer, wait_until


class Link:
    """One proxied connection; its flags make it lose traffic without closing."""

    def __init__(self) -> None:
        #: Client-to-server bytes are read and dropped.
        self.swallow_up = False
        #: Server-to-client bytes are read and dropped.
        self.swallow_down = False
        self.swallowed = trio.Event()


class Proxy(CuttableProxy):
    """CuttableProxy that can also hold new connections and lose traffic."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.links: list[Link] = []
        #: While an unset Event, new connections wait for it before going on.
        self.gate: trio.Event | None = None
        #: Set once a connection waits at the gate.
        self.waiting = trio.Event()
        #: New connections are closed at once, and counted.
        self.refuse = False
        self.refused = 0

    async def _handle(self, inbound: trio.SocketStream) -> None:
        if self.refuse:
            self.refused += 1
            await inbound.aclose()
            return
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        link = Link()
        self.links.append(link)
        outbound = await trio.open_tcp_stream(*self.target)
        self.sockets += [inbound, outbound]

        async def pump(src: trio.SocketStream, dst: trio.SocketStream, up: bool) -> None:
            try:
                while data := await src.receive_some(65536):
                    if link.swallow_up if up else link.swallow_down:
                        link.swallowed.set()
                        continue
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, inbound, outbound, True)
            nursery.start_soon(pump, outbound, inbound, False)


@asynccontextmanager
async def extended(address: tuple[str, int], **options: Any) -> AsyncIterator[Client]:
    host, port = address
    async with trioroom.connect(f"ws://{host}:{port}/ws", extension=True, **options) as client:
        yield client


async def start_proxy(nursery: trio.Nursery, address: tuple[str, int]) -> tuple[Proxy, Any]:
    proxy = Proxy(address)
    return proxy, await nursery.start(proxy.run)


def request_server(**settings: Any) -> Server:
    server = Server(root_notices=False, **settings)

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

    @server.on("stuck")
    async def stuck(conn: Connection, msg: Message) -> None:
        await trio.sleep_forever()

    return server


# -- negotiation -------------------------------------------------------------------------------


async def test_extension_is_negotiated_only_when_asked(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    async with extended(address) as ext, clients(address, 1) as (plain,):
        assert ext.extended and not plain.extended
        conns = {c.id: c for c in server.connections}
        assert conns[ext.id].extended and not conns[plain.id].extended
        assert ext.members() == [ext.id] and ext.joined and ext.connected
        with pytest.raises(RuntimeError, match=r"trioroom\.v1"):
            await plain.request("echo")
        # The extension's own events are not custom events.
        for event in ("trioroom.ack", "trioroom.reply", "trioroom.error", "trioroom.x"):
            with pytest.raises(ValueError, match="reserved"):
                await ext.send(event)


async def test_plain_client_sees_no_extension_traffic(start_server: StartServer) -> None:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    server = request_server(authorize_join=authorize_join)
    _, address = await start_server(server)
    async with clients(address, 1) as (client,):
        errors: list[ServerError] = []

        @client.on_error
        async def on_error(error: ServerError) -> None:
            errors.append(error)  # pragma: no cover - must not happen

        refused = trio.CancelScope()

        async def join_vip() -> None:
            with refused:
                await client.join("vip")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join_vip)
            await client.send("crash")  # would be a handler_error
            await client.send("chat", "x", dst="no-such-id")  # unknown_destination
            lobby = await client.join("lobby")
            await lobby.send("chat", "alone")
            # Everything above was handled before the marker came back, and
            # nothing (no trioroom.session, no error) arrived on root.
            assert await sync(client) == []
            assert await sync(lobby) == []
            assert "vip" not in client.rooms
            refused.cancel()
        assert errors == [] and client.resumes == 0
    assert server.metrics.frames_dropped["join_refused"] == 1


async def test_falls_back_to_the_plain_protocol(nursery: trio.Nursery) -> None:
    """A server that does not select trioroom.v1 is spoken to in the plain protocol."""
    frames: list[Message] = []
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()  # no subprotocol selected
        await ws.send_message(Message("root", "join_ack", "", "me", b'["me"]').encode())
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            msg = Message.decode(data)
            frames.append(msg)
            if msg.event == "done":
                done.set()
            if msg.event == "join":
                await ws.send_message(Message(msg.room, "join_ack", "", "me", b'["me"]').encode())

    serve = partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    ws_server = await nursery.start(serve)
    async with extended(("127.0.0.1", ws_server.port)) as client:
        assert not client.extended and client.id == "me"
        lobby = await client.join("lobby")
        await lobby.send("chat", "hi")
        with pytest.raises(RuntimeError, match=r"trioroom\.v1"):
            await lobby.request("chat")
        await client.send("done")
        with trio.fail_after(WAIT):
            await done.wait()
    assert [(m.room, m.event, m.src) for m in frames] == [
        ("lobby", "join", ""),  # no request reference
        ("lobby", "chat", "me"),
        ("root", "done", "me"),
    ]


# -- requests -----------------------------------------------------------------------------------


async def test_request_returns_the_handler_value_or_raises_its_error(
    start_server: StartServer,
) -> None:
    _, address = await start_server(request_server())
    async with extended(address) as client:
        with trio.fail_after(WAIT):
            assert json.loads(await client.request("add", "[1,2,3]")) == {"sum": 6}
            assert await client.request("echo", b"\x00\xff") == b"\x00\xff"
            with pytest.raises(RequestFailed) as info:
                await client.request("add", "[]")
            assert (info.value.code, info.value.message, info.value.event) == (
                "empty",
                "nothing to add",
                "add",
            )
            assert info.value.room == "root" and "nothing to add" in str(info.value)
            with pytest.raises(RequestFailed) as info:
                await client.request("crash")
            assert info.value.code == "handler_error" and "secret" not in info.value.message
            # Broadcasts and direct messages are answered once delivered.
            lobby = await client.join("lobby")
            assert await lobby.request("chat", "hi") == b""
            assert await lobby.request("chat", "me", dst=client.id) == b""
            assert (await lobby.receive()).text == "me"
            with pytest.raises(RequestFailed, match="unknown_destination"):
                await lobby.request("chat", "x", dst="no-such-id")
            await lobby.leave()
            with pytest.raises(RuntimeError, match="was left"):
                await lobby.request("chat", "x")


async def test_request_timeouts_on_either_side(start_server: StartServer) -> None:
    release = trio.Event()
    server = request_server(request_timeout=0.2)

    @server.on("slow")
    async def slow(conn: Connection, msg: Message) -> str:
        await release.wait()
        return "late"

    _, address = await start_server(server)
    async with extended(address) as client:
        with pytest.raises(RequestFailed) as info:
            await client.request("slow", timeout=0.05)  # the client gives up first
        assert info.value.code == "timeout" and "0.05s" in info.value.message
        release.set()  # its answer comes later and is dropped
        with trio.fail_after(WAIT):
            assert await client.request("echo", "still here") == b"still here"
            with pytest.raises(RequestFailed) as info:
                await client.request("stuck")  # the server gives up after 0.2 s
        assert (info.value.code, info.value.event) == ("timeout", "stuck")
        assert not client.session.pending


async def test_refused_join_raises_instead_of_hanging(start_server: StartServer) -> None:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    _, address = await start_server(
        authorize_join=authorize_join, root_notices=False, max_rooms_per_connection=3
    )
    async with extended(address) as client:
        with trio.fail_after(WAIT):
            with pytest.raises(RequestFailed) as info:
                await client.join("vip")
            assert (info.value.code, info.value.room, info.value.event) == (
                "join_refused",
                "vip",
                "join",
            )
            assert "vip" not in client.rooms and not client.session.pending
            lobby = await client.join("lobby")
            assert lobby.joined and lobby.members() == [client.id]
            await client.join("second")
            with pytest.raises(RequestFailed, match="join_refused"):
                await client.join("third")  # root, lobby, second: the limit
            await lobby.leave()
            assert (await client.join("third")).joined


async def test_errors_without_a_request_reach_on_error(start_server: StartServer) -> None:
    server = request_server()

    @server.on("odd")
    async def odd(conn: Connection, msg: Message) -> str:
        # Errors the client cannot parse must not break its reader.
        await conn.send("trioroom.error", b"\xff not json")
        await conn.send("trioroom.error", b'{"code": 5, "message": ["x"]}')
        return "ok"

    _, address = await start_server(server)
    async with extended(address) as client:
        errors: list[ServerError] = []
        three = trio.Event()

        @client.on_error
        async def on_error(error: ServerError) -> None:
            errors.append(error)
            if len(errors) == 3:
                three.set()

        await client.send("chat", "x", dst="no-such-id")
        with trio.fail_after(WAIT):
            assert await client.request("odd") == b"ok"
            await three.wait()
        assert [(e.code, e.event, e.room) for e in errors] == [
            ("unknown_destination", "chat", "root"),
            ("unknown", "", "root"),
            ("unknown", "", "root"),
        ]
        assert errors[1].message.endswith("not json") and errors[2].message == ""
        assert await client.request("echo", "fine") == b"fine"


async def test_extension_in_the_harness_under_autojump_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = request_server(ping_interval=5, ping_timeout=5)
    async with open_test_server(server) as harness:
        client = await harness.connect(extension=True, ping_interval=3, ping_timeout=3)
        assert client.extended
        await trio.sleep(3600)  # pings both ways keep it alive
        assert await client.request("echo", "x") == b"x"
        assert client.connected and client.resumes == 0


async def test_cancelled_join_is_left_and_a_join_again_is_kept() -> None:
    gated = GatedJoins("slow")
    server = Server(authorize_join=gated, root_notices=False)
    hooks: list[str] = []
    left = trio.Event()

    @server.on_join
    async def on_join(conn: Connection, room: str) -> None:
        hooks.append(f"join {room}")

    @server.on_leave
    async def on_leave(conn: Connection, room: str) -> None:
        hooks.append(f"leave {room}")
        left.set()

    async with open_test_server(server) as harness:
        a = await harness.connect(extension=True)
        await cancel_join_in_flight(a, gated)
        assert "slow" not in a.rooms
        gated.gate.set()
        with trio.fail_after(WAIT):
            await left.wait()  # the join's answer was followed by a leave
            assert await sync(a) == []
        assert hooks[-2:] == ["join slow", "leave slow"]
        assert not a.session.leaving and not a.session.pending
        # Cancelled, then joined again before the answer: the membership stays.
        gated.gate = trio.Event()
        gated.entered = trio.Event()
        await cancel_join_in_flight(a, gated)
        async with trio.open_nursery() as nursery:
            rooms: list[Any] = []
            nursery.start_soon(_append, rooms, a.join, "slow")
            await trio.testing.wait_all_tasks_blocked()
            gated.gate.set()
        (room,) = rooms
        assert room.joined and a.rooms["slow"] is room
        assert await sync(a) == []
        assert await server.members("slow") == [a.id] and not a.session.pending


# -- acknowledgements -----------------------------------------------------------------------------


async def test_acknowledged_frames_are_released_by_the_server(start_server: StartServer) -> None:
    server = request_server()

    @server.on("burst")
    async def burst(conn: Connection, msg: Message) -> str:
        for i in range(int(msg.payload)):
            await conn.send("n", str(i))
        return "done"

    _, address = await start_server(server)
    async with extended(address, ack_every=64) as client:
        with trio.fail_after(WAIT):
            assert await client.request("burst", "200") == b"done"
            # Frames 1-201 are in; acknowledgements of 64, 128 and 192 went out
            # before this request, so the server has handled them.
            assert await client.request("echo", "") == b""
        conn = server.connection(client.id)
        assert conn is not None and conn.replay is not None
        assert conn.replay.sent == client.session.received == 203
        assert conn.replay.since(191) is None  # acknowledged, so forgotten
        assert conn.replay.buffered_bytes < 11 * 100  # at most frames 193-203 are kept
        assert [int((await client.receive()).text) for _ in range(200)] == list(range(200))


# -- resumption ------------------------------------------------------------------------------


async def test_resumed_after_the_tcp_connection_is_cut_mid_stream(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server, address = await start_server(root_notices=False, rate_limit=1e6, rate_burst=10**6)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client, clients(address, 2) as (sender, watcher):
        lobby = await client.join("lobby")
        lobby_s = await sender.join("lobby")
        lobby_w = await watcher.join("lobby")
        notices: list[Message] = []

        @lobby_w.on("member_left")
        async def member_left(msg: Message) -> None:
            notices.append(msg)  # pragma: no cover - must not happen

        await lobby.wait_members(lambda ids: len(ids) == 3)
        first_id = client.id
        total = 600
        got: list[int] = []

        async def send_all() -> None:
            for i in range(total):
                await lobby_s.send("n", str(i))
                await trio.lowlevel.checkpoint()

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as inner:
                inner.start_soon(send_all)
                async for msg in lobby:
                    got.append(int(msg.text))
                    if len(got) == 100:
                        proxy.cut()  # while the rest is on its way
                    if len(got) == total:
                        break
        assert got == list(range(total)), "every message once, in order"
        assert client.resumes == 1 and client.id == first_id and not client.session_losses
        assert client.connected and lobby.joined
        assert sorted(lobby.members()) == sorted([client.id, sender.id, watcher.id])
        assert sorted(await server.members("lobby")) == sorted(lobby.members())
        await lobby.send("chat", "back")
        with trio.fail_after(WAIT):
            seen = [msg async for msg in _until(lobby_w, "chat")]
        assert [int(m.text) for m in seen[:-1]] == list(range(total))
        assert seen[-1].src == client.id and notices == []


async def test_not_resumed_after_the_window_gets_a_new_session_and_rejoins(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server, address = await start_server(root_notices=False, resume_window=0.3)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client, clients(address, 1) as (watcher,):
        losses: list[SessionLost] = []
        told = trio.Event()

        @client.on_session_lost
        async def on_session_lost(lost: SessionLost) -> None:
            losses.append(lost)
            told.set()

        lobby = await client.join("lobby")
        lobby_w = await watcher.join("lobby")
        gone = trio.Event()

        @lobby_w.on("member_left")
        async def member_left(msg: Message) -> None:
            gone.set()

        await lobby.wait_members(lambda ids: watcher.id in ids)
        first_id = client.id
        proxy.gate = trio.Event()  # the client's resume attempt waits here
        proxy.cut()
        with trio.fail_after(WAIT):
            await proxy.waiting.wait()
            await gone.wait()  # the window passed: the others saw it leave
        assert lobby_w.members() == [watcher.id]
        assert not client.connected and lobby.joined
        proxy.gate.set()
        with trio.fail_after(WAIT):
            await told.wait()
            assert losses == [SessionLost("expired", first_id, client.id, ("lobby",))]
            assert client.id != first_id and client.session_losses == losses
            # Joined again: the same Room object carries on.
            await lobby.wait_members(lambda ids: client.id in ids and watcher.id in ids)
            assert first_id not in lobby.members()
            await lobby_w.wait_members(lambda ids: client.id in ids)
            await lobby_w.send("chat", "welcome back")
            assert (await lobby.receive()).text == "welcome back"
            assert client.members()[0] == client.id
        assert client.resumes == 0 and client.connected
        assert sorted(await server.members("lobby")) == sorted([client.id, watcher.id])


async def test_a_request_lost_with_the_socket_is_sent_again_once(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server = request_server()
    calls: list[str] = []
    counted = {"b": trio.Event()}

    @server.on("count")
    async def count(conn: Connection, msg: Message) -> int:
        calls.append(msg.text)
        if msg.text in counted:
            counted[msg.text].set()
        return len(calls)

    _, address = await start_server(server)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client:
        results: list[bytes] = []
        link = proxy.links[-1]
        async with trio.open_nursery() as inner:
            # Lost on the way up: written, never received; sent again after the resume.
            link.swallow_up = True
            inner.start_soon(_append, results, client.request, "count", "a")
            with trio.fail_after(WAIT):
                await link.swallowed.wait()
            proxy.cut()
        assert results == [b"1"] and calls == ["a"] and client.resumes == 1
        async with trio.open_nursery() as inner:
            # Lost on the way down: received and answered, then replayed, not sent again.
            link = proxy.links[-1]
            link.swallow_down = True
            inner.start_soon(_append, results, client.request, "count", "b")
            with trio.fail_after(WAIT):
                await counted["b"].wait()
                await link.swallowed.wait()
            proxy.cut()
        assert results == [b"1", b"2"] and calls == ["a", "b"] and client.resumes == 2
        # A join lost on the way up is sent again too.
        link = proxy.links[-1]
        link.swallow_up = True
        rooms: list[Any] = []
        async with trio.open_nursery() as inner:
            inner.start_soon(_append, rooms, client.join, "later")
            with trio.fail_after(WAIT):
                await link.swallowed.wait()
            proxy.cut()
        assert rooms[0].joined and rooms[0].members() == [client.id]
        assert await server.members("later") == [client.id]


async def _until(room: Any, event: str) -> AsyncIterator[Message]:
    """The room's messages up to and including the first of ``event``."""
    async for msg in room:
        yield msg
        if msg.event == event:
            return


async def _append(target: list[Any], fn: Any, *args: Any) -> None:
    with trio.fail_after(WAIT):
        target.append(await fn(*args))


async def test_no_pong_counts_as_a_drop_and_replaces_the_old_socket(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # close_timeout: how long the server waits for the old socket to answer its close.
    server, address = await start_server(request_server(close_timeout=0.2))
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address, ping_interval=0.05, ping_timeout=0.3) as client:
        first_id = client.id
        link = proxy.links[-1]
        link.swallow_up = link.swallow_down = True  # a dead network, no RST, no FIN
        with trio.fail_after(WAIT):
            # Written into the dead link, then sent again on the resumed socket.
            assert await client.request("echo", "x") == b"x"
        assert client.resumes == 1 and client.id == first_id
        # The server still had the old socket: the resume replaced it.
        assert server.metrics.disconnects["resumed"] == 1 and len(proxy.links) == 2


async def test_kicked_while_away_ends_the_client(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server, address = await start_server(root_notices=False)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client:
        lobby = await client.join("lobby")
        first_id = client.id
        proxy.gate = trio.Event()
        proxy.cut()
        with trio.fail_after(WAIT):
            await proxy.waiting.wait()
            await wait_until(lambda: (c := server.connection(first_id)) is not None and c.suspended)
            assert await server.kick(first_id)
            proxy.gate.set()
            closed = await client.wait_closed()
        assert (closed.code, closed.local) == (4000, False)
        assert client.id == first_id and not lobby.joined
        with pytest.raises(ConnectionClosed, match="4000"):
            await lobby.send("chat", "x")
        await wait_until(lambda: not server.connections)


async def test_no_resume_without_a_session_or_when_turned_off(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    _, address = await start_server(root_notices=False, resume_window=0)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client:
        assert client.extended
        proxy.cut()
        with trio.fail_after(WAIT):
            closed = await client.wait_closed()
        assert closed.code == 1006 and client.resumes == 0


async def test_resume_off_ends_with_the_drop(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    _, address = await start_server(request_server())
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address, resume=False) as client:
        pending = trio.Event()

        async def wait_for_answer() -> None:
            with pytest.raises(ConnectionClosed):
                pending.set()
                await client.request("stuck", timeout=None)

        async with trio.open_nursery() as inner:
            inner.start_soon(wait_for_answer)
            await pending.wait()
            proxy.cut()
        assert client.closed is not None and client.closed.code == 1006


async def test_resume_attempts_stop_at_the_deadline(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server, address = await start_server(root_notices=False)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address, resume_timeout=0.5) as client:
        lobby = await client.join("lobby")
        proxy.refuse = True
        proxy.cut()
        with trio.fail_after(WAIT):
            closed = await client.wait_closed()
        assert closed.code == 1006 and "not resumed within 0.5s" in closed.reason
        assert "before the WebSocket handshake" in closed.reason
        # Immediately, then after about 0.1, 0.2 s: a few attempts, not a storm.
        assert 2 <= proxy.refused <= 5
        with pytest.raises(ConnectionClosed, match="not resumed"):
            await lobby.receive()
    assert server.metrics.disconnects["resumed"] == 0


async def test_closing_while_resuming_is_prompt(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    _, address = await start_server(root_notices=False)
    proxy, proxy_address = await start_proxy(nursery, address)
    async with extended(proxy_address) as client:
        await client.send("queued-before-the-cut")
        proxy.gate = trio.Event()  # never opened
        proxy.cut()
        with trio.fail_after(WAIT):
            await proxy.waiting.wait()
            assert not client.connected
            await client.send("queued-while-away")
            with trio.fail_after(1):  # no close handshake to wait for
                await client.aclose()
        assert client.closed is not None and client.closed.local
        with pytest.raises(ConnectionClosed):
            await client.send("x")
