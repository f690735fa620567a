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
from websockets.datastructures import Headers

from trioroom import Reject, Request, Server, Settings
from trioroom.handshake import TrustedProxies, client_address
from trioroom.web import WebApp

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
    assert server.admission.slots() == {"127.0.0.1": 3}
    for client in accepted:
        await client.close()
    await wait_until(lambda: not server.admission.slots())


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
        await wait_until(lambda: not server.admission.slots())
        assert server.admission.handshaking == 0, mode
    mode = "ok"
    client = await RawClient.connect(address)
    assert server.admission.slots() == {"127.0.0.1": 1}
    await client.close()
    await wait_until(lambda: not server.admission.slots())
    # The client goes away while authorize runs.
    mode = "hang"
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(("\r\n".join(upgrade(f"127.0.0.1:{address[1]}")) + "\r\n\r\n").encode())
    await wait_until(lambda: server.admission.slots() == {"127.0.0.1": 1})
    await stream.aclose()
    await wait_until(lambda: not server.admission.slots())
    assert server.admission.handshaking == 0


async def test_a_resumed_session_holds_one_slot(start_server: StartServer) -> None:
    server, address = await start_server(max_connections_per_address=2, root_notices=False)
    raw = await RawClient.connect(address, subprotocols=V1, read_root_ack=False)
    session = json.loads((await raw.recv_until("trioroom.session")).payload)
    await raw.recv_until("join_ack")
    raw.reset()
    await wait_until(lambda: (c := server.connection(session["id"])) is not None and c.suspended)
    # The suspended session keeps its slot.
    assert server.admission.slots() == {"127.0.0.1": 1}
    resumed = await RawClient.connect(
        address,
        path=f"/ws?resume={session['token']}&last=0",
        subprotocols=V1,
        read_root_ack=False,
    )
    assert (await resumed.recv()).event == "trioroom.resumed"
    # The resuming socket's slot is the session's now; the old one is free.
    assert server.admission.slots() == {"127.0.0.1": 1}
    await resumed.close()
    await wait_until(lambda: not server.admission.slots())
    assert server.admission.handshaking == 0


@pytest.mark.native_only
async def test_idle_sockets_from_one_address_cannot_lock_out_others(
    start_server: StartServer,
) -> None:
    """Sockets that never send a request hold handshakes until handshake_timeout;
    from one address they may hold only max_handshakes_per_address of them."""
    server, address = await start_server(max_connections=4, max_handshakes_per_address=2)
    idle = [await trio.open_tcp_stream(*address) for _ in range(2)]
    await wait_until(lambda: server.admission.handshaking == 2)
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
    await wait_until(
        lambda: server.admission.handshaking == 0 and not server.admission.handshakes()
    )


# -- item 4: the client's address behind a trusted proxy -----------------------------------


def forwarded(
    *pairs: tuple[str, str], peer: str | None = "10.0.0.1", trust: Any = ("10.0.0.1",)
) -> str | None:
    headers = Headers(list(pairs))
    return client_address(headers, peer, TrustedProxies(trust))


def test_x_forwarded_for_gives_the_right_most_untrusted_address() -> None:
    xff = "X-Forwarded-For"
    assert forwarded((xff, "203.0.113.7")) == "203.0.113.7"
    # A client can put anything on the left; the proxy appends what it saw.
    assert forwarded((xff, "6.6.6.6, 203.0.113.7")) == "203.0.113.7"
    assert forwarded((xff, "garbage, 203.0.113.7")) == "203.0.113.7"
    # Several proxies in a chain, each trusted: the first untrusted from the right.
    trust = ("10.0.0.0/8", "192.168.1.1")
    assert forwarded((xff, "203.0.113.7, 10.2.3.4, 192.168.1.1"), trust=trust) == "203.0.113.7"
    # Every hop trusted: the left-most one.
    assert forwarded((xff, "10.9.9.9, 10.2.3.4"), trust=trust) == "10.9.9.9"
    # Several header lines read as one list, in order.
    assert forwarded((xff, "6.6.6.6"), (xff, "203.0.113.7")) == "203.0.113.7"
    # Ports and brackets are tolerated; the address is normalised.
    assert forwarded((xff, "203.0.113.7:4711")) == "203.0.113.7"
    assert forwarded((xff, "[2001:DB8::1]:4711")) == "2001:db8::1"
    assert forwarded((xff, "2001:db8:0::1")) == "2001:db8::1"
    # Malformed where it counts, or unknown: the peer address.
    assert forwarded((xff, "not-an-address")) == "10.0.0.1"
    assert forwarded((xff, "")) == "10.0.0.1"
    assert forwarded((xff, "unknown")) == "10.0.0.1"
    # Headers from an untrusted peer, or with no proxy trusted, are ignored.
    assert forwarded((xff, "203.0.113.7"), peer="198.51.100.1") == "198.51.100.1"
    assert forwarded((xff, "203.0.113.7"), trust=()) == "10.0.0.1"
    assert forwarded((xff, "203.0.113.7"), peer=None) is None
    # "*" trusts every address, so the left-most is the client.
    assert forwarded((xff, "6.6.6.6, 203.0.113.7"), trust=("*",)) == "6.6.6.6"


def test_forwarded_header_for_values_rfc_7239() -> None:
    fwd = "Forwarded"
    assert forwarded((fwd, "for=203.0.113.7")) == "203.0.113.7"
    assert forwarded((fwd, 'For="[2001:db8:cafe::17]:4711"')) == "2001:db8:cafe::17"
    assert forwarded((fwd, 'for="203.0.113.7:47011";proto=https')) == "203.0.113.7"
    assert forwarded((fwd, "for=192.0.2.60;proto=http;by=203.0.113.43")) == "192.0.2.60"
    assert forwarded((fwd, "for=6.6.6.6, for=203.0.113.7")) == "203.0.113.7"
    assert forwarded((fwd, "for=6.6.6.6"), (fwd, "for=203.0.113.7;proto=https")) == "203.0.113.7"
    # Obfuscated or unknown: nothing to use, the nearest trusted address.
    assert forwarded((fwd, "for=_hidden")) == "10.0.0.1"
    assert forwarded((fwd, "for=unknown")) == "10.0.0.1"
    # Malformed: the peer.
    assert forwarded((fwd, "for=[::1]")) == "10.0.0.1"
    assert forwarded((fwd, 'for="203.0.113.7')) == "10.0.0.1"
    assert forwarded((fwd, "proto=https")) == "10.0.0.1"
    # Both headers must agree: a client could have sent the one the proxy does not set.
    both = (("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "203.0.113.7"))
    assert forwarded(*both) == "10.0.0.1"
    same = (("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "203.0.113.7"))
    assert forwarded(*same) == "203.0.113.7"


def test_forwarded_allow_ips_must_be_addresses_or_networks() -> None:
    assert Settings(forwarded_allow_ips="127.0.0.1, 10.0.0.0/8").forwarded_allow_ips == (
        "127.0.0.1",
        "10.0.0.0/8",
    )
    with pytest.raises(ValueError, match=r"proxy\.example"):
        Settings(forwarded_allow_ips=("proxy.example",))


async def test_a_trusted_proxy_forwards_the_client_address(start_server: StartServer) -> None:
    seen: list[Request] = []

    async def authorize(request: Request) -> bool:
        seen.append(request)
        return True

    server, address = await start_server(
        Server(
            authorize=authorize,
            forwarded_allow_ips=("127.0.0.1",),
            max_connections_per_address=1,
            root_notices=False,
        )
    )
    ann = await RawClient.connect(address, headers=[("X-Forwarded-For", "203.0.113.7")])
    assert (seen[0].remote_address, seen[0].peer_address) == ("203.0.113.7", "127.0.0.1")
    conn = server.connection(ann.id)
    assert conn is not None and conn.remote_address == "203.0.113.7"
    # The limit counts each client behind the proxy, not the proxy.
    bob = await RawClient.connect(address, headers=[("Forwarded", 'for="[2001:db8::1]"')])
    with pytest.raises(HandshakeRejected) as refused:
        await RawClient.connect(address, headers=[("X-Forwarded-For", "203.0.113.7")])
    assert refused.value.status == 429
    assert server.admission.slots() == {"203.0.113.7": 1, "2001:db8::1": 1}
    await ann.close()
    await bob.close()
    await wait_until(lambda: not server.admission.slots())


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    client = await RawClient.connect(address, headers=[("X-Forwarded-For", "203.0.113.7")])
    conn = server.connection(client.id)
    assert conn is not None and conn.remote_address == "127.0.0.1"
    assert conn.request.peer_address == "127.0.0.1"
    await client.close()


@pytest.mark.native_only
async def test_a_trusted_proxy_is_not_capped_as_one_client(start_server: StartServer) -> None:
    """Its sockets are not counted at accept; each forwarded client is, once read."""
    entered = 0
    release = trio.Event()

    async def authorize(request: Request) -> bool:
        nonlocal entered
        entered += 1
        await release.wait()
        return True

    server, address = await start_server(
        Server(
            authorize=authorize,
            forwarded_allow_ips=("127.0.0.1",),
            max_handshakes_per_address=2,
            root_notices=False,
        )
    )
    accepted: list[RawClient] = []
    refused: list[int] = []

    async def one(client: str) -> None:
        try:
            accepted.append(await RawClient.connect(address, headers=[("X-Forwarded-For", client)]))
        except HandshakeRejected as exc:
            refused.append(exc.status)

    async with trio.open_nursery() as clients:
        for i in range(4):
            clients.start_soon(one, f"203.0.113.{i}")
        clients.start_soon(one, "198.51.100.1")
        clients.start_soon(one, "198.51.100.1")
        clients.start_soon(one, "198.51.100.1")
        await wait_until(lambda: entered + server.metrics.handshakes_rejected[429] >= 7)
        release.set()
    assert (len(accepted), refused) == (6, [429])
    for client in accepted:
        await client.close()
    await wait_until(lambda: not server.admission.handshakes() and not server.admission.slots())


# -- item 10: DNS rebinding -------------------------------------------------------------------


@pytest.mark.native_only
async def test_a_loopback_server_refuses_a_host_that_is_not_loopback(
    start_server: StartServer,
) -> None:
    """A page of evil.example whose name resolves to 127.0.0.1 passes the
    same-host origin check; the Host check stops it, /metrics included."""
    server = Server(root_notices=False)
    server.process_request = WebApp(server, demo=False)
    server, address = await start_server(server)
    port = address[1]
    evil = f"evil.example:{port}"
    origin = f"Origin: http://{evil}"
    assert await http_exchange(address, upgrade(evil, origin)) == (400, b"Host not allowed\n")
    assert (await http_exchange(address, ["GET /metrics HTTP/1.1", f"Host: {evil}"]))[0] == 400
    assert (await http_exchange(address, ["GET /healthz HTTP/1.1", f"Host: {evil}"]))[0] == 400
    assert (await http_exchange(address, upgrade(None)))[0] == 400
    assert server.metrics.handshakes_rejected[400] == 4
    for host in (
        f"localhost:{port}",
        "LOCALHOST",
        f"app.localhost:{port}",
        f"127.0.0.1:{port}",
        "127.1.2.3",
        f"[::1]:{port}",
        "[::1]",
    ):
        assert (await http_exchange(address, upgrade(host)))[0] == 101, host
    status, _ = await http_exchange(address, ["GET /healthz HTTP/1.1", "Host: localhost"])
    assert status == 200


async def test_a_server_on_every_interface_takes_any_host_by_default(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False)
    _, port = await nursery.start(server.serve, "0.0.0.0", 0)
    assert (await http_exchange(("127.0.0.1", port), upgrade("chat.example.com")))[0] == 101


async def test_allowed_hosts_names_the_hosts_served(start_server: StartServer) -> None:
    server, address = await start_server(
        allowed_hosts=("chat.example.com", ".example.org", "[2001:db8::1]"), root_notices=False
    )
    for host in ("chat.example.com", "CHAT.example.com:443", "example.org", "a.b.example.org",
                 "[2001:db8::1]:8080", "chat.example.com."):  # fmt: skip
        assert (await http_exchange(address, upgrade(host)))[0] == 101, host
    # The list replaces the loopback rule, even on a loopback listener.
    for host in ("evil.example", "example.com", "xexample.org", "localhost", "2001:db8::1"):
        assert await http_exchange(address, upgrade(host)) == (400, b"Host not allowed\n"), host
    assert server.metrics.handshakes_rejected[400] == 5
    _, address = await start_server(allowed_hosts=("*",))
    assert (await http_exchange(address, upgrade("evil.example")))[0] == 101


# -- item 11: duplicate Origin or Host headers --------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (["Host: localhost", "Host: localhost"], b"Duplicate Host header\n"),
        (
            ["Host: localhost", "Origin: http://localhost", "Origin: http://a"],
            b"Duplicate Origin header\n",
        ),
    ],
)
@pytest.mark.parametrize("allow_all_origins", [False, True])
async def test_duplicate_host_or_origin_is_answered_400_and_logged_once(
    start_server: StartServer,
    engine: str,
    caplog: pytest.LogCaptureFixture,
    headers: list[str],
    body: bytes,
    allow_all_origins: bool,
) -> None:
    server, address = await start_server(allow_all_origins=allow_all_origins)
    caplog.set_level(logging.INFO, logger="trioroom")
    lines = upgrade(None, *headers)
    if engine != "native" and "Host" in body.decode():
        # h11 refuses it before trio-websocket or Hypercorn hands the request to trioroom.
        assert (await http_exchange(address, lines))[0] == 400
        return
    assert await http_exchange(address, lines) == (400, body)
    assert server.metrics.handshakes_rejected == {400: 1}
    # trioroom.wire is websockets' own log of each response ("HTTP response sent").
    records = [r for r in caplog.records if r.name in ("trioroom.server", "trioroom.adapter")]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None
    assert "duplicate" in records[0].getMessage()
    # The server carries on.
    client = await RawClient.connect(address)
    await client.close()
