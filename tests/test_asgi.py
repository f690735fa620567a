"""What is specific to the ASGI engine (``Server.asgi_app``), under Hypercorn's trio worker.

The behaviour tests that take ``start_server`` run on this engine too (the
``engine`` parameter); these cover the engine's own duties: the request it
builds from the scope, refusals with and without the denial response
extension, its HTTP routes, mounting in Quart-Trio and Starlette on the port
of their routes, and ``hypercorn`` run as a separate process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from trioroom import CloseCode, Connection, Message, Reject, Request, Server, connect
from trioroom.asgi import Receive, Scope, Send

from .asgi_apps import HELLO, MOUNT, make_quart_app, make_starlette_app
from .serveproc import HttpResponse, running
from .test_js import CHROMIUM, missing, require_node, require_node_modules
from .wire import WAIT, HandshakeRejected, RawClient, start_hypercorn, wait_until

ROOT = Path(__file__).resolve().parent.parent
CHAT_SCRIPT = ROOT / "tests" / "browser" / "asgi_chat.mjs"


async def http_get(address: tuple[str, int], target: str) -> HttpResponse:
    """One ``GET``, read up to its ``Content-Length``.

    Not to EOF: Quart-Trio keeps a request's connection open after the
    response until the client goes (its ASGI call waits for the disconnect).
    """
    host, port = address
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    with trio.fail_after(WAIT):
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(request.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            parsed = {}
            for line in lines:
                name, _, value = line.partition(":")
                parsed[name.strip().lower()] = value.strip()
            while len(body) < int(parsed.get("content-length", "0")):
                chunk = await stream.receive_some(65536)
                assert chunk, body
                body += chunk
    return HttpResponse(int(status_line.split()[1]), parsed, body)


async def test_request_carries_target_headers_cookies_and_address(nursery: trio.Nursery) -> None:
    requests: list[Request] = []

    async def authorize(request: Request) -> Any:
        await trio.lowlevel.checkpoint()
        requests.append(request)
        return {"user": request.query.get("token")}

    server = Server(authorize=authorize)
    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address, "/ws?token=t", headers=[("Cookie", "s=1")])
    (request,) = requests
    assert (request.path, request.query, request.cookies) == ("/ws", {"token": "t"}, {"s": "1"})
    assert request.headers["Host"] == f"127.0.0.1:{address[1]}"
    assert request.remote_address == "127.0.0.1"
    conn = server.connection(a.id)
    assert conn is not None and conn.claims == {"user": "t"}
    assert conn.remote_address == "127.0.0.1"
    await a.close()


async def test_refusals_answer_with_status_and_body(nursery: trio.Nursery) -> None:
    async def authorize(request: Request) -> Any:
        await trio.lowlevel.checkpoint()
        if request.query.get("token") != "good":
            raise Reject(403, "Bad token")
        return True

    server = Server(authorize=authorize, allowed_origins=["https://app.example"])
    address = await start_hypercorn(nursery, server.asgi_app())
    cases = [
        ("/ws?token=bad", [], 403, b"Bad token\n"),
        ("/ws?token=good", [("Origin", "https://evil.example")], 403, b"Origin not allowed\n"),
        ("/elsewhere", [], 404, b"Not Found\n"),
    ]
    for path, headers, status, body in cases:
        with pytest.raises(HandshakeRejected) as info:
            await RawClient.connect(address, path, headers=headers)
        assert (info.value.status, info.value.body) == (status, body)
    assert server.metrics.handshakes_rejected == {403: 2, 404: 1}
    a = await RawClient.connect(address, "/ws?token=good")
    await a.close()


async def test_without_the_denial_extension_a_refusal_is_a_close_answered_403(
    nursery: trio.Nursery,
) -> None:
    server = Server(authorize=lambda request: _refuse())
    app = server.asgi_app()

    async def without_extension(scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    address = await start_hypercorn(nursery, without_extension)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address)
    assert info.value.status == 403
    assert server.metrics.handshakes_rejected == {401: 1}
    await wait_until(lambda: server.admission.handshaking == 0 and not server.admission.slots())


async def _refuse() -> None:
    await trio.lowlevel.checkpoint()


async def test_subprotocol_is_selected_when_offered(nursery: trio.Nursery) -> None:
    server = Server()
    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address, subprotocols=["other", "trioroom.v1"], read_root_ack=False)
    assert a.protocol.subprotocol == "trioroom.v1"
    session = await a.recv()
    assert session.event == "trioroom.session"
    b = await RawClient.connect(address)
    assert b.protocol.subprotocol is None
    await b.close()


async def test_text_messages_are_read_as_bytes(nursery: trio.Nursery) -> None:
    server = Server(root_notices=False)
    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address)
    await a.send_text(Message("lobby", "join").encode())
    ack = await a.recv_until("join_ack")
    assert (ack.room, ack.src) == ("lobby", a.id)
    await a.close()


async def test_message_over_max_message_size_closes_with_1009(nursery: trio.Nursery) -> None:
    server = Server(max_message_size=1000, root_notices=False)
    closed: list[tuple[int | None, str]] = []

    @server.on_disconnect
    async def gone(conn: Connection) -> None:
        closed.append((conn.close_code, conn.disconnect_reason))

    # Hypercorn's own limit (16 MiB) is larger: the engine enforces the server's.
    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.send(Message("root", "chat", "", "", b"x" * 980))
    code, _ = await a.wait_closed()
    await a.stream.aclose()
    assert code == CloseCode.MESSAGE_TOO_BIG
    await wait_until(lambda: len(closed) == 1)
    assert closed[0] == (CloseCode.MESSAGE_TOO_BIG, "protocol_error")
    assert server.connection(b.id) is not None
    await b.expect_nothing()
    await b.close()


async def test_oversized_message_error_precedes_the_close(nursery: trio.Nursery) -> None:
    # As tests/test_extension.py checks on the native engine (trio-websocket
    # closes such a message itself): the trioroom.v1 error, then 1009.
    from .test_extension import ExtendedClient

    server = Server(max_message_size=1000)
    address = await start_hypercorn(nursery, server.asgi_app())
    client, _ = await ExtendedClient.connect(address)
    await client.raw.send(Message("root", "big", "", "", b"x" * 5000))
    error = await client.recv_until("trioroom.error")
    assert json.loads(error.payload)["code"] == "message_too_big"
    assert (await client.raw.wait_closed())[0] == CloseCode.MESSAGE_TOO_BIG


async def test_write_timeout_ends_a_connection_whose_send_is_stuck(nursery: trio.Nursery) -> None:
    # Hypercorn's send cannot be cancelled: the connection must end (hooks,
    # rooms) all the same while the peer still does not read.
    server = Server(
        ping_interval=None,
        write_timeout=0.5,
        slow_consumer_policy="drop_oldest",
        max_message_size=1 << 20,
    )
    gone: list[str] = []

    @server.on_disconnect
    async def disconnected(conn: Connection) -> None:
        gone.append(conn.disconnect_reason)

    address = await start_hypercorn(nursery, server.asgi_app())
    stuck = await RawClient.connect(address)  # never reads from here on
    with trio.fail_after(WAIT):
        while not gone:
            await server.send_to(stuck.id, "blob", b"x" * 60_000)
            await trio.sleep(0.001)
    assert gone == ["write_timeout"]
    assert server.connection(stuck.id) is None
    stuck.reset()


async def test_healthz_and_metrics_are_served_beside_the_endpoint(nursery: trio.Nursery) -> None:
    server = Server()
    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address)
    health = await http_get(address, "/healthz")
    assert health.status == 200
    assert '"connections": 1' in health.text
    metrics = await http_get(address, "/metrics")
    assert metrics.status == 200
    assert "trioroom_connections" in metrics.text
    assert (await http_get(address, "/ws")).status == 426
    assert (await http_get(address, "/nothing")).status == 404
    await a.close()
    bare = Server()
    bare_address = await start_hypercorn(nursery, bare.asgi_app(web=False))
    assert (await http_get(bare_address, "/healthz")).status == 404


async def test_client_closing_is_seen_and_cleaned_up(nursery: trio.Nursery) -> None:
    server = Server()
    left: list[str] = []

    @server.on_disconnect
    async def gone(conn: Connection) -> None:
        left.append(conn.disconnect_reason)

    address = await start_hypercorn(nursery, server.asgi_app())
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.close()
    await wait_until(lambda: left == ["peer"])
    assert server.connection(a.id) is None
    await b.recv_until("member_left")
    await b.close()
    await wait_until(lambda: not server.connections)
    assert server.admission.handshaking == 0 and not server.admission.slots()


async def test_server_shutdown_as_hypercorn_shutdown_trigger_closes_with_1001(
    nursery: trio.Nursery,
) -> None:
    server = Server()
    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        await server.shutdown()
        stopped.set()

    stopped = trio.Event()
    address = await start_hypercorn(nursery, server.asgi_app(), _trigger=shutdown_trigger)
    a = await RawClient.connect(address)
    stop.set()
    assert await a.wait_closed() == (CloseCode.GOING_AWAY, "server shutting down")
    assert server.metrics.disconnects["shutdown"] == 1
    with trio.fail_after(WAIT):
        await stopped.wait()


# -- alongside a web application, on one port ------------------------------------------------


async def _check_one_port(address: tuple[str, int], server: Server) -> None:
    """The web app's route and trioroom's endpoint, health and rooms on ``address``."""
    hello = await http_get(address, "/hello")
    assert (hello.status, hello.text) == (200, HELLO)
    health = await http_get(address, MOUNT + "/healthz")
    assert health.status == 200, health
    url = f"ws://{address[0]}:{address[1]}{MOUNT}/ws"
    with trio.fail_after(30):
        async with connect(url) as alice, connect(url) as bob:
            alice_room = await alice.join("lobby")
            bob_room = await bob.join("lobby")
            await alice_room.send("chat", "hi bob")
            msg = await bob_room.receive()
            assert (msg.event, msg.text, msg.src) == ("chat", "hi bob", alice.id)
            conn = server.connection(alice.id)
            assert conn is not None and conn.request.path == MOUNT + "/ws"
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address, MOUNT + "/other")
    assert info.value.status == 404


async def test_quart_trio_app_serves_its_route_and_the_rooms_on_one_port(
    nursery: trio.Nursery,
) -> None:
    server = Server()
    address = await start_hypercorn(nursery, make_quart_app(server))
    await _check_one_port(address, server)


async def test_starlette_app_serves_its_route_and_the_rooms_on_one_port(
    nursery: trio.Nursery,
) -> None:
    server = Server()
    address = await start_hypercorn(nursery, make_starlette_app(server))
    await _check_one_port(address, server)


async def test_readme_quart_example_serves_its_route_and_the_rooms(nursery: trio.Nursery) -> None:
    from .test_client import readme_example

    example = readme_example("quart")
    address = await start_hypercorn(nursery, example["app"])
    hello = await http_get(address, "/hello")
    assert (hello.status, hello.text) == (200, "hello")
    a = await RawClient.connect(address, "/rooms/ws")
    await a.send(Message("root", "ping", "", "", b"1"))
    assert (await a.recv_until("pong")).payload == b"1"
    assert example["server"].connection(a.id) is not None
    await a.close()


# -- the JavaScript client in Chromium, through each web app ------------------------------------


def _node_for_browser() -> str:
    node = require_node()
    require_node_modules("playwright-core")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
    return node


@pytest.mark.timeout(240)
@pytest.mark.parametrize("framework", ["quart-trio", "starlette"])
async def test_js_client_in_chromium_chats_through_the_web_app(
    nursery: trio.Nursery, framework: str
) -> None:
    node = _node_for_browser()
    # No resumable sessions: Hypercorn reports a page's close as 1006 (see
    # trioroom.asgi), which would keep the closed page's session, and delay
    # its member_left, for resume_window. Resumption has tests of its own.
    server = Server(resume_window=0)
    make = make_quart_app if framework == "quart-trio" else make_starlette_app
    host, port = await start_hypercorn(nursery, make(server))
    base = f"http://{host}:{port}"
    env = {**os.environ, "TRIOROOM_CHROMIUM": CHROMIUM}
    command = [node, str(CHAT_SCRIPT), base, f"ws://{host}:{port}{MOUNT}/ws"]
    with trio.fail_after(180):
        async with running(command, env) as browser:
            status = await browser.wait()
    output = f"{browser.stdout.text}\n{browser.stderr.text}"
    assert status == 0, output
    assert browser.stdout.text.endswith("ok\n"), output
    # The pages' connections were trioroom's, through the app's port.
    assert server.metrics.connections_opened == 2


# -- hypercorn as a separate process -----------------------------------------------------------


@pytest.mark.timeout(120)
async def test_hypercorn_trio_worker_process_serves_the_app() -> None:
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "trio",
        "--bind",
        "127.0.0.1:0",
        "tests.asgi_apps:app",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    with trio.fail_after(60):
        async with running(command, env, cwd=str(ROOT)) as proc:
            match = await proc.stderr.wait_for(rb"Running on http://127\.0\.0\.1:(\d+)")
            address = ("127.0.0.1", int(match.group(1)))
            a = await RawClient.connect(address)
            b = await RawClient.connect(address)
            await a.join("lobby")
            await b.join("lobby")
            await a.send(Message("lobby", "ping", "", "", b"1"))
            pong = await a.recv_until("pong")
            assert (pong.room, pong.payload) == ("lobby", b"1")
            await b.send(Message("lobby", "chat", "", "", b"hi"))
            chat = await a.recv_until("chat")
            assert chat.src == b.id
            await a.close()
            await b.close()
            health = await http_get(address, "/healthz")
            assert health.status == 200
            proc.proc.terminate()
            assert await proc.wait() == 0, proc.stderr.text


# -- several Hypercorn workers as one server, through Redis -------------------------------------


@pytest.mark.timeout(120)
async def test_hypercorn_workers_joined_through_redis_behave_as_one_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    from .test_redis import RedisProcess

    redis = RedisProcess()
    redis.start()
    try:
        await _two_workers_as_one_server(redis.url)
    finally:
        redis.stop()


async def _two_workers_as_one_server(redis_url: str) -> None:
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "trio",
        "--workers",
        "2",
        "--bind",
        "127.0.0.1:0",
        "trioroom.asgi:from_environment()",
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRIOROOM_")},
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
        "TRIOROOM_REDIS": redis_url,
        "TRIOROOM_REDIS_PREFIX": "asgi-workers",
        "TRIOROOM_ROOT_NOTICES": "false",
    }
    with trio.fail_after(90):
        async with running(command, env, cwd=str(ROOT)) as proc:
            match = await proc.stderr.wait_for(rb"Running on http://127\.0\.0\.1:(\d+)")
            address = ("127.0.0.1", int(match.group(1)))
            # Both workers registered their node in Redis.
            await wait_until(lambda: _nodes(redis_url) == 2)
            clients = [await RawClient.connect(address) for _ in range(12)]
            for client in clients:
                await client.join("lobby")
            for client in clients:
                await client.sync()
            first, *others = clients
            await first.send(Message("lobby", "chat", "", "", b"all"))
            for other in others:
                assert await other.recv_until("chat") == Message(
                    "lobby", "chat", "", first.id, b"all"
                )
            await others[-1].send(Message("lobby", "dm", first.id, "", b"back"))
            assert (await first.recv_until("dm")).payload == b"back"
            for client in clients:
                await client.close()
            proc.proc.terminate()
            assert await proc.wait() == 0, proc.stderr.text
            await wait_until(lambda: _nodes(redis_url) == 0)


def _nodes(redis_url: str) -> int:
    """How many trioroom nodes are registered under the test's prefix (one blocking query)."""
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"SCARD asgi-workers:nodes\r\n")
        reply = sock.recv(64)
    return int(reply[1:].split(b"\r\n", 1)[0])
