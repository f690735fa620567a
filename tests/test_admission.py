"""Admission hardening (issue 14): per-address slots, handshakes in progress,
forwarded client addresses, the Host check against DNS rebinding, and
duplicate headers.

Everything runs on real sockets on 127.0.0.1 (and 127.0.0.2, another
loopback address, for "another client").
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio

from trioroom import Reject, Request, Server

from .wire import WAIT, HandshakeRejected, RawClient, StartServer, wait_until

V1 = ["trioroom.v1"]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def http_exchange(
    address: tuple[str, int],
    lines: list[str],
    *,
    local: str | None = None,
) -> tuple[int, bytes]:
    """Send a raw HTTP request (header lines given verbatim); the status and body."""
    stream = await trio.open_tcp_stream(*address, local_address=local)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        with trio.fail_after(WAIT):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                body += chunk
    status = int(head.split(b" ")[1]) if head else 0
    return status, body


def upgrade(host: str | None, *extra: str, path: str = "/ws") -> list[str]:
    """The lines of a WebSocket upgrade request, with ``Host: host`` unless ``None``."""
    lines = [f"GET {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return lines


async def connect_from(address: tuple[str, int], local: str, **kwargs: Any) -> RawClient:
    """A RawClient whose TCP connection comes from the loopback address ``local``."""
    stream = await trio.open_tcp_stream(*address, local_address=local)
    return await RawClient.connect(stream, **kwargs)


# -- item 3: the per-address limit cannot be raced -----------------------------------------


async def test_simultaneous_upgrades_with_a_slow_authorize_get_exactly_the_limit(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    entered = 0
    release = trio.Event()

    async def authorize(request: Request) -> bool:
        nonlocal entered
        entered += 1
        await release.wait()
        return True

    server, address = await start_server(
        Server(authorize=authorize, max_connections_per_address=3, root_notices=False)
    )
    accepted: list[RawClient] = []
    refused: list[int] = []

    async def one() -> None:
        try:
            accepted.append(await RawClient.connect(address))
        except HandshakeRejected as exc:
            refused.append(exc.status)

    async with trio.open_nursery() as clients:
        for _ in range(10):
            clients.start_soon(one)
        # Every request has either reached authorize or been refused.
        await wait_until(lambda: entered + server.metrics.handshakes_rejected[429] >= 10)
        release.set()
    assert len(accepted) == 3
    assert refused == [429] * 7
    assert entered == 3
    assert server._per_address == {"127.0.0.1": 3}
    for client in accepted:
        await client.close()
    await wait_until(lambda: not server._per_address)


async def test_the_reserved_slot_is_released_on_every_failed_admission(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A leaked slot would lock the address out: with a limit of 1, each
    failure below must leave room for the next connection."""
    mode = "ok"

    async def authorize(request: Request) -> Any:
        if mode == "refuse":
            return None
        if mode == "reject":
            raise Reject(418, "No tea")
        if mode == "raise":
            raise RuntimeError("authorize broke")
        if mode == "hang":
            await trio.sleep_forever()
        return {"user": "ann"}

    server, address = await start_server(
        Server(authorize=authorize, max_connections_per_address=1, handshake_timeout=0.5)
    )
    caplog.set_level(logging.CRITICAL, logger="trioroom")
    for mode in ("refuse", "reject", "raise", "hang"):
        with pytest.raises((HandshakeRejected, ConnectionError, trio.BrokenResourceError)):
            await RawClient.connect(address)
        await wait_until(lambda: not server._per_address)
        assert server._handshaking == 0, mode
    mode = "ok"
    client = await RawClient.connect(address)
    assert server._per_address == {"127.0.0.1": 1}
    await client.close()
    await wait_until(lambda: not server._per_address)
    # The client goes away while authorize runs.
    mode = "hang"
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(("\r\n".join(upgrade(f"127.0.0.1:{address[1]}")) + "\r\n\r\n").encode())
    await wait_until(lambda: server._per_address == {"127.0.0.1": 1})
    await stream.aclose()
    await wait_until(lambda: not server._per_address)
    assert server._handshaking == 0


async def test_a_resumed_session_holds_one_slot(start_server: StartServer) -> None:
    server, address = await start_server(max_connections_per_address=2, root_notices=False)
    raw = await RawClient.connect(address, subprotocols=V1, read_root_ack=False)
    session = json.loads((await raw.recv_until("trioroom.session")).payload)
    await raw.recv_until("join_ack")
    raw.reset()
    await wait_until(lambda: (c := server.connection(session["id"])) is not None and c.suspended)
    # The suspended session keeps its slot.
    assert server._per_address == {"127.0.0.1": 1}
    resumed = await RawClient.connect(
        address,
        path=f"/ws?resume={session['token']}&last=0",
        subprotocols=V1,
        read_root_ack=False,
    )
    assert (await resumed.recv()).event == "trioroom.resumed"
    # The resuming socket's slot is the session's now; the old one is free.
    assert server._per_address == {"127.0.0.1": 1}
    await resumed.close()
    await wait_until(lambda: not server._per_address)
    assert server._handshaking == 0


@pytest.mark.native_only
async def test_idle_sockets_from_one_address_cannot_lock_out_others(
    start_server: StartServer,
) -> None:
    """Sockets that never send a request hold handshakes until handshake_timeout;
    from one address they may hold only max_handshakes_per_address of them."""
    server, address = await start_server(max_connections=4, max_handshakes_per_address=2)
    idle = [await trio.open_tcp_stream(*address) for _ in range(2)]
    await wait_until(lambda: server._handshaking == 2)
    # More from the same address are refused at once, before any request.
    status, body = await http_exchange(address, upgrade(f"127.0.0.1:{address[1]}"))
    assert (status, body) == (429, b"Too many handshakes in progress from your address\n")
    assert server.metrics.handshakes_rejected[429] == 1
    extra = [await trio.open_tcp_stream(*address) for _ in range(3)]
    await wait_until(lambda: server.metrics.handshakes_rejected[429] == 4)
    # Another address still gets in, below max_connections.
    client = await connect_from(address, "127.0.0.2")
    assert client.id in [c.id for c in server.connections]
    for stream in idle + extra:
        await stream.aclose()
    await client.close()
    await wait_until(lambda: server._handshaking == 0 and not server._handshakes)
