"""Opening one WebSocket of the client (trio): TCP or TLS, then the upgrade via trio-websocket."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..codes import CloseCode
from ..exceptions import ConnectionClosed

__all__ = ["closed_by", "host_and_resource", "open_stream", "upgrade"]


def host_and_resource(
    url: str, ssl_context: ssl.SSLContext | None, stream: trio.abc.Stream | None
) -> tuple[str, str]:
    """The ``Host`` header and request target of a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if parts.scheme == "ws" and ssl_context is not None and stream is None:
        raise ValueError("ssl_context needs a wss:// URL")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    host = parts.netloc.rpartition("@")[2]
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, resource


async def open_stream(url: str, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """The TCP (``ws://``) or TLS (``wss://``) connection to the URL's host."""
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None
    if parts.scheme == "wss":
        context = ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(
            host, parts.port or 443, ssl_context=context, https_compatible=True
        )
    return await trio.open_tcp_stream(host, parts.port or 80)


async def upgrade(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: list[str] | None,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
) -> trio_websocket.WebSocketConnection:
    """The WebSocket upgrade over ``stream``; trio-websocket's reader runs in ``nursery``."""
    watched = _WatchedStream(stream)
    async with trio.open_nursery() as handshake:
        # trio-websocket waits forever for a 101 that cannot come once the
        # server closed the connection: watch for that.
        handshake.start_soon(watched.raise_on_eof)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            watched,  # type: ignore[arg-type]  # any trio stream works
            host,
            resource,
            subprotocols=subprotocols,
            extra_headers=headers,
            message_queue_size=16,
            max_message_size=max_message_size,
        )
        handshake.cancel_scope.cancel()
    return ws


def closed_by(reason: Any) -> ConnectionClosed:
    """Our :class:`ConnectionClosed` for trio-websocket's close reason."""
    if reason is None:
        return ConnectionClosed(CloseCode.ABNORMAL_CLOSURE)
    return ConnectionClosed(reason.code, reason.reason or "")


class _WatchedStream(trio.abc.Stream):
    """A stream that tells when its peer closed it (used during the handshake)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ended = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def raise_on_eof(self) -> None:
        await self.ended.wait()
        raise ConnectionClosed(
            CloseCode.ABNORMAL_CLOSURE, "connection closed before the WebSocket handshake"
        )
