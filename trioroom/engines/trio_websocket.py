"""The trio-websocket engine: serve trioroom connections from ``serve_websocket``.

An application that already runs trio-websocket passes each request on::

    server = trioroom.Server()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await server.handle_trio_websocket(request)

    await trio_websocket.serve_websocket(handler, "127.0.0.1", 8080, ssl_context=None)

Admission (origin policy, limits, ``authorize``) is :meth:`Server.admit`, the
same as the native engine; a refusal is an HTTP response with the same status
and body. After that the connection is a :class:`~trioroom.Connection` like
any other: the same rooms, handlers, hooks, limits and cleanup.

Differences from the native engine: the application routes requests itself
(``settings.path`` is not checked and ``process_request`` is not called), and
trio-websocket frames each outbound message per connection (the native engine
frames a broadcast once for all recipients).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket
from websockets.datastructures import Headers

from ..codes import CloseCode
from ..exceptions import Reject
from ..extension import SUBPROTOCOL
from ..handshake import HANDSHAKES_IN_PROGRESS, Request
from ..wsframe import frame_payload
from .base import Endpoint, Transport

__all__ = ["TrioWebsocketTransport", "request_from_trio_websocket", "serve_trio_websocket"]

logger = logging.getLogger("trioroom.adapter")

#: What trio-websocket reports when the TCP connection ended without a close frame.
_ABNORMAL_CLOSURE = 1006


class TrioWebsocketTransport:
    """A :class:`trioroom.connection.Transport` over a trio-websocket connection.

    trio-websocket's own reader task answers pings and close frames; this
    class turns its messages into bytes, enforces ``max_message_size`` and
    sends the frames the connection queued.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, max_message_size: int) -> None:
        self._ws = ws
        self._max_message_size = max_message_size
        self._wake: Callable[[], None] = lambda: None
        # True while a send is under way; still True after a cancelled send,
        # when the stream may hold half a frame and must not get another.
        self._mid_write = False
        #: ``(code, reason)`` of the close frame the peer sent, once it did.
        self.peer_close: tuple[int, str] | None = None
        #: The close this side sent after a protocol error (1009), if any.
        self.protocol_error: tuple[int, str] | None = None
        # trio-websocket answers pings itself: a flood is its business.
        self.flooded = False
        #: No direct path: every frame goes through the writer and
        #: trio-websocket's own send.
        self.direct = False
        self.unsent = 0

    def attach(self, wake_writer: Callable[[], None]) -> None:
        # trio-websocket writes control frames itself: nothing to wake for.
        self._wake = wake_writer

    async def receive(self) -> bytes | None:
        if self.protocol_error is not None:
            await trio.lowlevel.checkpoint()
            return None
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            if reason is not None and reason.code != _ABNORMAL_CLOSURE:
                self.peer_close = (reason.code, reason.reason or "")
            return None
        # Text messages are read as bytes too: the wire format is binary.
        data = message.encode() if isinstance(message, str) else message
        if len(data) > self._max_message_size:
            self.protocol_error = (
                CloseCode.MESSAGE_TOO_BIG,
                f"message of {len(data)} bytes is over the limit of {self._max_message_size}",
            )
            return None
        return data

    def next_buffered(self) -> bytes | None:
        # trio-websocket hands over one message per call.
        return None

    def send_now(self, data: bytes) -> bool:
        raise RuntimeError("trio-websocket has no direct path; check .direct first")

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        await trio.aclose_forcefully(self._ws)

    async def write(self, frames: list[bytes]) -> None:
        ws = self._ws
        for frame in frames:
            if not frame:
                continue  # a wake-up, not a frame
            self._mid_write = True
            try:
                await ws.send_message(frame_payload(frame))
            except trio_websocket.ConnectionClosed:
                # The reader sees the close too and ends the connection.
                self._mid_write = False
                await trio.lowlevel.checkpoint()
                return
            self._mid_write = False
        await trio.lowlevel.checkpoint()

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed:
            # Closing: the reader ends the connection; no heartbeat failure.
            pass

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        ws = self._ws
        if self._mid_write:
            await trio.aclose_forcefully(ws)
            return
        if self.protocol_error is not None:
            code, reason = self.protocol_error
        try:
            await self.write(pending)
            # Sends the close frame and waits for the peer's; the caller
            # bounds the wait, and a cancelled aclose drops the TCP connection.
            await ws.aclose(code, reason)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            if self._mid_write:
                await trio.aclose_forcefully(ws)


if TYPE_CHECKING:  # mypy checks that the class implements the Transport protocol

    def _implements_transport(transport: TrioWebsocketTransport) -> Transport:
        return transport


def request_from_trio_websocket(request: trio_websocket.WebSocketRequest) -> Request:
    """The :class:`trioroom.Request` of a trio-websocket handshake request."""
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
    # wsproto keeps the Host header apart; the origin policy needs it.
    event: Any = getattr(request, "_event", None)
    host = getattr(event, "host", None)
    if isinstance(host, str) and not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("Host", host))
    remote = request.remote
    address = str(remote.address) if isinstance(remote, trio_websocket.Endpoint) else None
    return Request(request.path, Headers(pairs), address)


async def serve_trio_websocket(
    endpoint: Endpoint, request: trio_websocket.WebSocketRequest
) -> None:
    """Admit, accept and serve one trio-websocket request (see the module docstring).

    Never raises for a failing connection: errors are logged.
    """
    admission = endpoint.admission
    trequest = admission.client_request(request_from_trio_websocket(request))
    try:
        # The listeners are trio-websocket's: only allowed_hosts applies.
        admission.screen(trequest, loopback_only=False)
    except Reject as exc:
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await _reject(endpoint, request, exc)
        return
    # trio-websocket read the request already: the cap bounds how many wait
    # for authorize and the 101 from one address.
    if not admission.begin_handshake(trequest.remote_address):
        refusal = Reject(429, HANDSHAKES_IN_PROGRESS)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await _reject(endpoint, request, refusal)
        return
    try:
        # Counted while admitted, as on the native engine, so that concurrent
        # handshakes cannot exceed max_connections.
        with admission.handshake(trequest) as handshake:
            # One deadline for admission (authorize included) and the 101.
            with trio.move_on_after(endpoint.settings.handshake_timeout) as deadline:
                try:
                    claims = await admission.admit(trequest)
                except Reject as exc:
                    await _reject(endpoint, request, exc)
                    return
                # Offer the trioroom.v1 extension to clients that ask for it.
                proposed = request.proposed_subprotocols
                subprotocol = SUBPROTOCOL if SUBPROTOCOL in proposed else None
                ws = await request.accept(subprotocol=subprotocol)
            if deadline.cancelled_caught:
                endpoint.metrics.handshakes_rejected[408] += 1
                return
            transport = TrioWebsocketTransport(ws, endpoint.settings.max_message_size)
            handshake.handed_over()
            await endpoint.handle_transport(
                transport, trequest, claims, extended=subprotocol is not None
            )
    except trio_websocket.ConnectionClosed:
        logger.debug("client %s went away during the handshake", trequest.remote_address)
    except Exception:
        logger.exception("connection from %s failed", trequest.remote_address)


async def _reject(
    endpoint: Endpoint, request: trio_websocket.WebSocketRequest, exc: Reject
) -> None:
    endpoint.metrics.handshakes_rejected[exc.status] += 1
    with trio.move_on_after(endpoint.settings.handshake_timeout):
        await request.reject(
            exc.status,
            extra_headers=[(b"Content-Type", b"text/plain; charset=utf-8")],
            body=(exc.body + "\n").encode(),
        )
