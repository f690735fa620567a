"""What is specific to the trio-websocket engine (Server.handle_trio_websocket).

The behaviour tests of test_server.py run on this engine too (the ``engine``
parameter of ``start_server``); these cover the adapter's own duties.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

from trioroom import CloseCode, Connection, Message, Request, Server
from trioroom.engines.trio_websocket import request_from_trio_websocket

from .wire import HandshakeRejected, RawClient, wait_until


async def serve(
    nursery: trio.Nursery, server: Server, **options: Any
) -> tuple[tuple[str, int], list[Request]]:
    """Run trio-websocket's server, handing requests to ``server``; returns its address."""
    requests: list[Request] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        requests.append(request_from_trio_websocket(request))
        await server.handle_trio_websocket(request)

    start = partial(
        trio_websocket.serve_websocket,
        handler,
        "127.0.0.1",
        0,
        ssl_context=None,
        handler_nursery=nursery,
        **options,
    )
    ws_server = await nursery.start(start)
    return ("127.0.0.1", ws_server.port), requests


async def test_request_carries_target_headers_host_and_address(nursery: trio.Nursery) -> None:
    server = Server()
    address, requests = await serve(nursery, server)
    a = await RawClient.connect(address, "/ws?token=t", headers=[("Cookie", "s=1")])
    (request,) = requests
    assert (request.path, request.query, request.cookies) == ("/ws", {"token": "t"}, {"s": "1"})
    assert request.headers["Host"] == f"127.0.0.1:{address[1]}"
    assert request.remote_address == "127.0.0.1"
    conn = server.connection(a.id)
    assert conn is not None and conn.remote_address == "127.0.0.1"
    await a.close()


async def test_text_messages_are_read_as_bytes(nursery: trio.Nursery) -> None:
    server = Server(root_notices=False)
    address, _ = await serve(nursery, server)
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

    # trio-websocket's own limit is larger: the adapter enforces the server's.
    address, _ = await serve(nursery, server, max_message_size=1 << 20)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.send(Message("root", "chat", "", "", b"x" * 980))
    code, _ = await a.wait_closed()
    await a.stream.aclose()
    assert code == CloseCode.MESSAGE_TOO_BIG
    await wait_until(lambda: len(closed) == 1)
    assert closed[0][0] == CloseCode.MESSAGE_TOO_BIG
    assert server.connection(b.id) is not None
    await b.expect_nothing()
    await b.close()


async def test_limits_and_rejections_answer_before_the_upgrade(nursery: trio.Nursery) -> None:
    server = Server(max_connections_per_address=1, allowed_origins=["https://app.example"])
    address, _ = await serve(nursery, server)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address, headers=[("Origin", "https://evil.example")])
    assert (info.value.status, info.value.body.strip()) == (403, b"Origin not allowed")
    a = await RawClient.connect(address)
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address)
    assert info.value.status == 429
    assert server.metrics.handshakes_rejected == {403: 1, 429: 1}
    await a.close()
    await wait_until(lambda: not server.connections)
    c = await RawClient.connect(address)
    assert server.admission.handshaking == 0
    await c.close()


async def test_shutdown_refuses_new_requests_with_503(nursery: trio.Nursery) -> None:
    server = Server()
    address, _ = await serve(nursery, server)
    a = await RawClient.connect(address)
    async with trio.open_nursery() as inner:
        inner.start_soon(server.shutdown)
        assert await a.wait_closed() == (CloseCode.GOING_AWAY, "server shutting down")
    await a.stream.aclose()
    with pytest.raises(HandshakeRejected) as info:
        await RawClient.connect(address)
    assert info.value.status == 503
