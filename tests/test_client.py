"""The Python client (trioroom.connect) and the testing harness (trioroom.testing).

Tests that take ``start_server`` run over real sockets on both server engines
(native and the trio-websocket adapter); the others use the in-memory harness.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trioroom
from trioroom import Connection, Message, Request, Server
from trioroom.client import Client, ConnectionClosed, ConnectionRejected, Room
from trioroom.testing import open_test_server

from .wire import HYPERCORN_CLIENT_CLOSE, WAIT, RawClient, StartServer, wait_until


@asynccontextmanager
async def clients(
    address: tuple[str, int], count: int, **options: Any
) -> AsyncIterator[list[Client]]:
    host, port = address
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(trioroom.connect(f"ws://{host}:{port}/ws", **options))
            for _ in range(count)
        ]


async def sync(room: Room) -> list[Message]:
    """Round-trip a direct message to ourselves on ``room``; return what came before it.

    The server keeps FIFO order per sender and recipient, so once the marker
    is back every earlier frame of ours was handled.
    """
    marker = uuid.uuid4().hex
    await room.send("__sync__", marker, dst=room.id)
    before: list[Message] = []
    with trio.fail_after(WAIT):
        async for msg in room:
            if msg.event == "__sync__" and msg.text == marker:
                return before
            before.append(msg)
    raise AssertionError("room ended before the sync marker came back")


# -- connecting ------------------------------------------------------------------------


async def test_connect_learns_own_id_from_root_join_ack(start_server: StartServer) -> None:
    server, address = await start_server()
    async with clients(address, 2) as (a, b):
        assert uuid.UUID(a.id).version == 4 and a.id != b.id
        assert a.name == "root" and a.joined
        assert a.members()[0] == a.id  # the joiner comes first in its join_ack
        assert b.members() == [b.id, a.id]
        assert await a.wait_members(lambda ids: b.id in ids) == [a.id, b.id]
        assert {c.id for c in server.connections} == {a.id, b.id}
        assert a.rooms == {"root": a}
    await wait_until(lambda: not server.connections)


async def test_rejected_handshake_raises_with_status_and_body(start_server: StartServer) -> None:
    async def authorize(request: Request) -> Any:
        return {"user": "ann"} if request.query.get("token") == "good" else None

    _, (host, port) = await start_server(authorize=authorize)
    with pytest.raises(ConnectionRejected) as info:
        async with trioroom.connect(f"ws://{host}:{port}/ws?token=bad"):
            pytest.fail("connected")  # pragma: no cover
    assert info.value.status == 401
    assert b"Unauthorized" in info.value.body
    assert "401" in str(info.value)
    async with trioroom.connect(f"ws://{host}:{port}/ws?token=good") as a:
        assert a.id


async def test_headers_reach_authorize(start_server: StartServer) -> None:
    seen: list[Request] = []

    async def authorize(request: Request) -> Any:
        seen.append(request)
        return request.cookies.get("session") == "s3cret"

    _, (host, port) = await start_server(authorize=authorize)
    url = f"ws://{host}:{port}/ws"
    async with trioroom.connect(url, headers={"Cookie": "session=s3cret"}):
        pass
    with pytest.raises(ConnectionRejected):
        async with trioroom.connect(url, headers=[("Cookie", "session=nope")]):
            pass  # pragma: no cover
    assert [r.cookies.get("session") for r in seen] == ["s3cret", "nope"]


# -- rooms and members -----------------------------------------------------------------


async def test_join_returns_after_join_ack_and_tracks_members(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    async with clients(address, 3) as (a, b, c):
        lobby_a = await a.join("lobby")
        assert lobby_a.name == "lobby" and lobby_a.joined and lobby_a.id == a.id
        assert lobby_a.members() == [a.id]
        assert await server.members("lobby") == [a.id]
        lobby_b = await b.join("lobby")
        assert lobby_b.members() == [b.id, a.id]
        assert await lobby_a.wait_members(lambda ids: len(ids) == 2) == [a.id, b.id]
        # members() is a copy
        lobby_a.members().clear()
        assert lobby_a.members() == [a.id, b.id]
        # joining again returns the same room without a round trip
        assert await a.join("lobby") is lobby_a
        assert set(a.rooms) == {"root", "lobby"}
        await c.join("lobby")
        await lobby_a.wait_members(lambda ids: c.id in ids)
        await c.aclose()
        assert await lobby_a.wait_members(lambda ids: c.id not in ids) == [a.id, b.id]
        await lobby_b.leave()
        assert not lobby_b.joined
        assert await lobby_a.wait_members(lambda ids: ids == [a.id]) == [a.id]
        assert "lobby" not in b.rooms
        assert await server.members("lobby") == [a.id]


async def test_membership_notices_go_to_handlers_not_to_the_iteration(
    start_server: StartServer,
) -> None:
    _, address = await start_server(root_notices=False)
    async with clients(address, 2) as (a, b):
        lobby = await a.join("lobby")
        notices: list[Message] = []
        seen_left = trio.Event()

        @lobby.on("member_left")
        async def member_left(msg: Message) -> None:
            notices.append(msg)
            seen_left.set()

        lobby.on("new_member", _appender(notices))
        await (await b.join("lobby")).leave()
        with trio.fail_after(WAIT):
            await seen_left.wait()
        assert [(m.event, m.text) for m in notices] == [("new_member", b.id), ("member_left", b.id)]
        assert await sync(lobby) == []  # nothing reached the iteration


def _appender(target: list[Message]) -> Any:
    async def append(msg: Message) -> None:
        target.append(msg)

    return append


async def test_leave_ends_the_iteration_and_send_after_leave_raises(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    async with clients(address, 2) as (a, b):
        lobby_a = await a.join("lobby")
        lobby_b = await b.join("lobby")
        await lobby_b.send("chat", "before")
        assert (await lobby_a.receive()).text == "before"
        await lobby_b.send("chat", "queued")
        await sync(lobby_b)  # "queued" is on its way to a
        await lobby_a.leave()
        assert [m.text async for m in lobby_a] == ["queued"]
        with pytest.raises(trio.EndOfChannel):
            await lobby_a.receive()
        with pytest.raises(RuntimeError, match="was left"):
            await lobby_a.send("chat", "x")
        await lobby_a.leave()  # leaving again does nothing
        assert await server.members("lobby") == [b.id]
        # a left room can be joined again: a fresh Room object
        again = await a.join("lobby")
        assert again is not lobby_a and again.members() == [a.id, b.id]


async def test_room_closed_by_the_server_counts_as_left(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    async with clients(address, 2) as (a, b):
        lobby_a = await a.join("lobby")
        lobby_b = await b.join("lobby")
        await lobby_b.send("chat", "last")
        await sync(lobby_b)
        assert await server.close_room("lobby") == 2
        with trio.fail_after(WAIT):
            assert [m.text async for m in lobby_a] == ["last"]
            assert [m.text async for m in lobby_b] == []
        assert not lobby_a.joined and "lobby" not in a.rooms
        with pytest.raises(RuntimeError, match="was left"):
            await lobby_a.send("chat", "x")
        again = await a.join("lobby")
        assert again.joined and again.members() == [a.id]


# -- sending ---------------------------------------------------------------------------------


async def test_broadcast_reaches_other_members_with_real_src(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    async with clients(address, 4) as (a, b, c, outsider):
        rooms = [await client.join("lobby") for client in (a, b, c)]
        await outsider.join("elsewhere")
        await rooms[0].send("chat", "hi")
        await rooms[0].send("data", b"\x00\xff")
        for room in rooms[1:]:
            with trio.fail_after(WAIT):
                got = [await room.receive(), await room.receive()]
            assert got == [
                Message("lobby", "chat", "", a.id, b"hi"),
                Message("lobby", "data", "", a.id, b"\x00\xff"),
            ]
        assert await sync(rooms[0]) == []  # the sender does not get its own broadcast
        assert await sync(outsider) == []


async def test_direct_message_reaches_only_its_target(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    async with clients(address, 3) as (a, b, c):
        lobby_a = await a.join("lobby")
        lobby_b = await b.join("lobby")
        await c.join("lobby")
        await lobby_a.send("whisper", "psst", dst=b.id)
        with trio.fail_after(WAIT):
            assert await lobby_b.receive() == Message("lobby", "whisper", b.id, a.id, b"psst")
        # a direct message on root, to a client that is in no other room
        await a.send("hello", "you", dst=c.id)
        with trio.fail_after(WAIT):
            assert await c.receive() == Message("root", "hello", c.id, a.id, b"you")
        assert await sync(lobby_a) == []


async def test_server_handlers_and_server_sends_reach_the_client(
    start_server: StartServer,
) -> None:
    server = Server(root_notices=False)

    @server.on("ping")
    async def ping(conn: Connection, msg: Message) -> None:
        await conn.send("pong", msg.payload, room=msg.room)
        await server.send_to(conn.id, "server-dm", b"direct")

    _, address = await start_server(server)
    async with clients(address, 1) as (a,):
        lobby = await a.join("lobby")
        await lobby.send("ping", "1")
        with trio.fail_after(WAIT):
            assert await lobby.receive() == Message("lobby", "pong", "", "", b"1")
            assert await a.receive() == Message("root", "server-dm", a.id, "", b"direct")


async def test_handlers_run_in_order_and_may_send_and_join(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False)
    async with clients(address, 2) as (a, b):
        lobby_a = await a.join("lobby")
        lobby_b = await b.join("lobby")
        got: list[str] = []
        done = trio.Event()

        @lobby_b.on("n")
        async def on_n(msg: Message) -> None:
            got.append(msg.text)
            if msg.text == "4":
                # a handler may wait for the reader (join_ack): no deadlock
                side = await b.join("side")
                assert side.joined
                await lobby_b.send("ack", "done")
                done.set()

        for i in range(5):
            await lobby_a.send("n", str(i))
        await lobby_a.send("other", "to the iteration")
        with trio.fail_after(WAIT):
            await done.wait()
            assert (await lobby_b.receive()).event == "other"
            assert (await lobby_a.receive()).text == "done"
        assert got == ["0", "1", "2", "3", "4"]
        lobby_b.off("n")
        await lobby_a.send("n", "5")
        with trio.fail_after(WAIT):
            assert (await lobby_b.receive()).text == "5"


async def test_reserved_names_and_bad_arguments_raise_value_error(
    start_server: StartServer,
) -> None:
    _, address = await start_server()
    async with clients(address, 1) as (a,):
        for event in trioroom.RESERVED_EVENTS:
            with pytest.raises(ValueError, match="reserved"):
                await a.send(event, "x")
        with pytest.raises(ValueError, match="non-empty"):
            await a.send("", "x")
        for event in ("join", "join_ack", "leave_ack", "open", "close"):
            with pytest.raises(ValueError):
                a.on(event, _appender([]))
        with pytest.raises(ValueError, match="non-empty"):
            await a.join("")
        with pytest.raises(ValueError, match="root"):
            await a.leave()
        assert await a.join("root") is a


# -- closing and errors ---------------------------------------------------------------------


async def test_kick_surfaces_as_connection_closed_everywhere(start_server: StartServer) -> None:
    entered = trio.Event()

    async def authorize_join(conn: Connection, room: str) -> bool:
        if room == "never":
            entered.set()
            await trio.sleep_forever()
        return True

    server, address = await start_server(authorize_join=authorize_join, root_notices=False)
    async with clients(address, 1) as (a,):
        lobby = await a.join("lobby")
        errors: list[ConnectionClosed] = []

        async def expect_closed(fn: Any, *args: Any) -> None:
            with pytest.raises(ConnectionClosed) as info:
                await fn(*args)
            errors.append(info.value)

        async def iterate() -> None:
            async for _ in lobby:
                pytest.fail("no message was sent")  # pragma: no cover

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expect_closed, a.join, "never")
            nursery.start_soon(expect_closed, iterate)
            with trio.fail_after(WAIT):
                await entered.wait()
            await server.kick(a.id, 4000, "bye")
        assert [(e.code, e.reason, e.local) for e in errors] == [(4000, "bye", False)] * 2
        assert "4000" in str(errors[0]) and "bye" in str(errors[0])
        with pytest.raises(ConnectionClosed, match="4000"):
            await lobby.send("chat", "x")
        with pytest.raises(ConnectionClosed, match="4000"):
            await a.join("other")
        with pytest.raises(ConnectionClosed, match="4000"):
            await lobby.receive()
        with pytest.raises(ConnectionClosed, match="4000"):
            await lobby.leave()
        closed = await a.wait_closed()
        assert (closed.code, closed.reason) == (4000, "bye")
        assert a.closed is not None and not lobby.joined


@pytest.mark.not_asgi(reason=HYPERCORN_CLIENT_CLOSE)
async def test_leaving_the_block_closes_cleanly_after_queued_frames(
    start_server: StartServer,
) -> None:
    server = Server(root_notices=False)
    codes: list[int | None] = []
    received: list[bytes] = []

    @server.on("last")
    async def last(conn: Connection, msg: Message) -> None:
        received.append(msg.payload)

    @server.on_disconnect
    async def gone(conn: Connection) -> None:
        codes.append(conn.close_code)

    _, (host, port) = await start_server(server)
    async with trioroom.connect(f"ws://{host}:{port}/ws") as a:
        for i in range(50):
            await a.send("last", str(i))
    await wait_until(lambda: codes == [1000])
    assert received == [str(i).encode() for i in range(50)]
    assert a.closed is not None and a.closed.local
    with pytest.raises(ConnectionClosed, match="closed by the client"):
        await a.send("late")


async def test_errors_in_the_block_and_in_handlers_propagate_unwrapped(
    start_server: StartServer,
) -> None:
    _, (host, port) = await start_server()
    url = f"ws://{host}:{port}/ws"
    with pytest.raises(KeyError, match="mine"):
        async with trioroom.connect(url):
            raise KeyError("mine")

    async def boom(msg: Message) -> None:
        raise ZeroDivisionError("handler failed")

    with pytest.raises(ZeroDivisionError, match="handler failed"):
        async with trioroom.connect(url) as a:
            a.on("boom", boom)
            await a.send("boom", dst=a.id)
            await trio.sleep_forever()  # cancelled by the handler's error


async def test_connection_refused_raises_os_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(OSError):
        async with trioroom.connect(f"ws://127.0.0.1:{port}/ws"):
            pass  # pragma: no cover


async def test_server_dropping_the_connection_before_the_upgrade_raises(
    nursery: trio.Nursery,
) -> None:
    async def drop(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, drop, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(ConnectionClosed, match="before the WebSocket handshake"):
        with trio.fail_after(WAIT):
            async with trioroom.connect(f"ws://127.0.0.1:{port}/ws"):
                pass  # pragma: no cover


async def test_a_client_that_does_not_read_is_dropped_by_the_server(
    start_server: StartServer,
) -> None:
    """Backpressure: full room queue -> client stops reading -> server's slow-consumer policy."""
    server, address = await start_server(
        root_notices=False, queue_frames=4, rate_limit=10_000, rate_burst=10_000
    )
    sender = await RawClient.connect(address)
    await sender.join("lobby")
    async with clients(address, 1, queue_size=2) as (stuck,):
        lobby = await stuck.join("lobby")
        payload = b"x" * 60_000
        with trio.fail_after(WAIT):
            while not server.metrics.disconnects["slow_consumer"]:
                await sender.send(Message("lobby", "blob", "", "", payload))
                await sender.sync()
        assert server.metrics.disconnects["slow_consumer"] == 1
        await wait_until(lambda: server.connection(stuck.id) is None)
        # Reading again drains what arrived, then reports the close.
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(WAIT):
            async for msg in lobby:
                assert msg.payload == payload
        # The close frame goes out if the socket had room for it within
        # close_timeout; otherwise the connection was just dropped.
        assert info.value.code in (4001, 1006)
    await sender.close()


# -- cancellation in the middle of join -------------------------------------------------------


class GatedJoins:
    """authorize_join that holds joins of ``room`` until ``gate`` is set."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.entered = trio.Event()
        self.gate = trio.Event()

    async def __call__(self, conn: Connection, room: str) -> bool:
        if room == self.room:
            self.entered.set()
            await self.gate.wait()
        return True


async def cancel_join_in_flight(client: Client, gated: GatedJoins) -> None:
    """Start ``client.join(gated.room)`` and cancel it while the server holds it."""
    cancel = trio.CancelScope()

    async def join() -> None:
        with cancel:
            await client.join(gated.room)
            pytest.fail("join returned")  # pragma: no cover

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join)
        with trio.fail_after(WAIT):
            await gated.entered.wait()
        cancel.cancel()


async def test_cancelled_join_is_left_when_its_join_ack_arrives() -> None:
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
        a = await harness.connect()
        await cancel_join_in_flight(a, gated)
        assert "slow" not in a.rooms  # no half-joined room on the client
        gated.gate.set()
        with trio.fail_after(WAIT):
            await left.wait()  # the late join_ack was answered with leave
        assert [h for h in hooks if h.endswith("slow")] == ["join slow", "leave slow"]
        assert "slow" not in await server.rooms()
        assert await sync(a) == []
        # and the client can join it again normally
        room = await a.join("slow")
        assert room.joined and room.members() == [a.id]
        assert await server.members("slow") == [a.id]


async def test_join_again_after_a_cancelled_join_keeps_the_membership() -> None:
    gated = GatedJoins("slow")
    server = Server(authorize_join=gated, root_notices=False)
    async with open_test_server(server) as harness:
        a = await harness.connect()
        b = await harness.connect()
        await cancel_join_in_flight(a, gated)
        async with trio.open_nursery() as nursery:
            rooms: list[Room] = []

            async def join_again() -> None:
                rooms.append(await a.join("slow"))

            nursery.start_soon(join_again)
            await trio.testing.wait_all_tasks_blocked()
            gated.gate.set()
        (room,) = rooms
        assert room.joined and a.rooms["slow"] is room
        await sync(a)  # both join_acks handled, no leave sent
        assert await server.members("slow") == [a.id]
        slow_b = await b.join("slow")
        await room.send("chat", "still here")
        with trio.fail_after(WAIT):
            assert (await slow_b.receive()).text == "still here"


# -- the testing harness ----------------------------------------------------------------------


async def test_harness_serves_handlers_and_hooks_in_memory() -> None:
    server = Server()
    connected: list[str] = []

    @server.on("echo")
    async def echo(conn: Connection, msg: Message) -> None:
        await conn.send("echoed", msg.payload, room=msg.room)

    @server.on_connect
    async def hello(conn: Connection) -> None:
        connected.append(conn.id)

    async with open_test_server(server) as harness:
        assert harness.server is server
        a = await harness.connect()
        b = await harness.connect()
        assert connected == [a.id, b.id]
        await a.send("echo", "hi")
        with trio.fail_after(WAIT):
            assert await a.receive() == Message("root", "echoed", "", "", b"hi")
        await b.aclose()
        assert await a.wait_members(lambda ids: b.id not in ids) == [a.id]
    assert not server.connections


async def test_harness_applies_authorize_and_settings() -> None:
    async def authorize(request: Request) -> Any:
        return request.query.get("token") == "ok" and {"user": request.query.get("user")}

    async with open_test_server(authorize=authorize, root_notices=False) as harness:
        with pytest.raises(ConnectionRejected) as info:
            await harness.connect("/ws?token=bad")
        assert info.value.status == 401
        a = await harness.connect("/ws?token=ok&user=ann")
        conn = harness.server.connection(a.id)
        assert conn is not None and conn.claims == {"user": "ann"}
        assert harness.server.settings.root_notices is False


async def test_harness_under_autojump_clock(autojump_clock: trio.abc.Clock) -> None:
    """An hour of idle connection in no real time: heartbeats keep it open."""
    server = Server(ping_interval=30, ping_timeout=10)
    async with open_test_server(server) as harness:
        a = await harness.connect()
        lobby = await a.join("lobby")
        b = await harness.connect()
        lobby_b = await b.join("lobby")
        start = trio.current_time()
        await trio.sleep(3600)
        assert trio.current_time() - start >= 3600
        await lobby.send("chat", "an hour later")
        assert (await lobby_b.receive()).text == "an hour later"
        assert server.metrics.heartbeat_failures == 0
        assert len(server.connections) == 2


async def test_harness_propagates_errors_unwrapped() -> None:
    async def boom(msg: Message) -> None:
        raise LookupError("from a client handler")

    with pytest.raises(LookupError, match="from a client handler"):
        async with open_test_server() as harness:
            a = await harness.connect()
            a.on("boom", boom)
            await a.send("boom", dst=a.id)
            await trio.sleep_forever()
    with pytest.raises(AssertionError, match="from the test body"):
        async with open_test_server() as harness:
            await harness.connect()
            raise AssertionError("from the test body")


# -- the README's examples run -------------------------------------------------------------


def readme_example(name: str) -> dict[str, Any]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\s*```python\n(.+?)\n```", text, re.S)
    assert match, f"README.md has no {name} example"
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(compile(match.group(1), f"README.md:{name}", "exec"), namespace)
    return namespace


async def test_readme_testing_example_runs() -> None:
    await readme_example("testing")["test_roll_reaches_everyone"]()


async def test_readme_client_example_runs(
    nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = readme_example("client")["chat"]
    server = Server(root_notices=False)
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    url = f"ws://{host}:{port}/ws"
    async with clients((host, port), 2) as (bob, carol):
        lobby_b = await bob.join("lobby")
        done = trio.Event()

        async def run_chat() -> None:
            await chat(url)
            done.set()

        nursery.start_soon(run_chat)
        with trio.fail_after(WAIT):
            hello = await lobby_b.receive()
            assert hello.text == "hello everyone"
            lobby_c = await carol.join("lobby")
            assert (await lobby_c.receive()).text == "welcome!"  # the DM of the handler
            await lobby_b.send("chat", "bye")
            await done.wait()
            await lobby_b.wait_members(lambda ids: hello.src not in ids)
    assert f"{bob.id}: bye" in capsys.readouterr().out
