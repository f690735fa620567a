"""The ASGI engine: trioroom as an ASGI 3 application, beside a web application.

:meth:`Server.asgi_app` returns an :class:`ASGIApp`. Served alone::

    # app.py: hypercorn --worker-class trio app:app
    server = trioroom.Server()
    app = server.asgi_app()

or mounted at a path of a Quart-Trio or Starlette application, on the port of
its HTTP routes (see ``README.md`` and ``docs/concepts.md``). The WebSocket
endpoint is ``settings.path`` below the mount point (``/ws``, or
``/rooms/ws`` when mounted at ``/rooms``); ``/healthz`` and ``/metrics`` are
served below it too unless ``web=False``.

Admission (origin policy, limits, ``authorize``) is :meth:`Server.admit`, the
same as the other engines. A refusal answers with its HTTP status and body
through the ASGI WebSocket denial response extension where the ASGI server
offers it (Hypercorn does); elsewhere it closes before the accept, which the
ASGI server answers with 403. After that the connection is a
:class:`~trioroom.Connection` like any other: the same rooms, handlers,
hooks, limits and cleanup.

What ASGI cannot do, and what this engine does instead:

* **No pings.** ASGI has no ping or pong: the ASGI server answers the
  client's pings itself and may send its own (Hypercorn's
  ``websocket_ping_interval``), but the application never learns whether a
  pong came back. :meth:`ASGITransport.ping` therefore returns at once: the
  heartbeat never closes a connection for a missing pong on this engine, and
  ``ping_timeout`` has no effect. ``write_timeout`` still applies, since a
  send waits for the ASGI server's write.
* **Sends cannot be cancelled.** Hypercorn writes each message to the socket
  inside a shielded scope, so a send to a peer that stopped reading waits as
  long as the kernel does. The sends of a connection therefore run in a
  sender task of their own: the connection (its slow-consumer policy, its
  write timeout, its cleanup and hooks) never waits for a stuck send; only
  the ASGI call, which Hypercorn owns, returns once the send ends.
* **Close codes.** The close code of ``websocket.disconnect`` is used as the
  peer's. Hypercorn (up to 0.18 at least) reports 1006 for every close the
  client starts, whatever code it sent; such a close then reads as a lost
  socket (``disconnect_reason="peer"``, code 1006), and a ``trioroom.v1``
  session is suspended for ``resume_window`` instead of ended.
* **Message size.** The ASGI server reads a whole message before handing it
  over; trioroom's ``max_message_size`` is enforced on it then (close 1009,
  like the native engine). A message over the ASGI server's own limit
  (Hypercorn's ``websocket_max_message_size``, 16 MiB by default) is closed
  by that server with 1009 before trioroom sees it.
* Each message is one ``websocket.send``: a broadcast is framed by the ASGI
  server for each recipient (the native engine frames it once).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import trio
from websockets.datastructures import Headers

from ..codes import CloseCode
from ..exceptions import Reject
from ..extension import SUBPROTOCOL
from ..handshake import HANDSHAKES_IN_PROGRESS, Request
from ..web import Observed, WebApp
from ..wsframe import frame_payload
from .base import Endpoint, Transport

if TYPE_CHECKING:
    from websockets.http11 import Response


class ASGIServer(Endpoint, Observed, Protocol):
    """What the ASGI engine needs of a server (:class:`~trioroom.Server` is one)."""

    async def start_backplane(self, nursery: trio.Nursery) -> None: ...

    async def shutdown(self, grace: float | None = None) -> None: ...


__all__ = [
    "ASGIApp",
    "ASGIServer",
    "ASGITransport",
    "Receive",
    "Scope",
    "Send",
    "request_from_scope",
    "serve_asgi_websocket",
]

logger = logging.getLogger("trioroom.asgi")

#: An ASGI connection scope, and the two callables of an ASGI 3 application.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: What a ``websocket.disconnect`` without a code means (RFC 6455: no status received).
_NO_STATUS = 1005
#: The extension through which a refusal can be an HTTP response.
_DENIAL = "websocket.http.response"
#: Hop-by-hop headers: the ASGI server manages the connection itself.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})


class ASGITransport:
    """A :class:`trioroom.connection.Transport` over one ASGI WebSocket connection.

    The connection's reader calls :meth:`receive` (ASGI ``receive``); its
    writer hands frames to :meth:`write`, which passes them to the sender task
    (:meth:`run_sender`, started by :func:`serve_asgi_websocket`) and waits
    for it: a wait that can be cancelled, unlike the ASGI server's send.
    """

    def __init__(self, receive: Receive, send: Send, max_message_size: int) -> None:
        self._receive = receive
        self._send = send
        self._max_message_size = max_message_size
        # Batches for the sender: (messages, done). The writer hands over one
        # at a time and waits for it; the close path adds one more, which may
        # follow the batch of a write whose wait was cancelled. The sender
        # sends whole messages in order, so nothing is cut short: a close
        # always goes out after what was handed over before it.
        self._outbox, self._outbox_out = trio.open_memory_channel[
            tuple[list[MutableMapping[str, Any]], trio.Event]
        ](2)
        #: Set once the ASGI server refused a send: the peer is gone.
        self._broken = False
        #: Set once ``websocket.disconnect`` was received.
        self.disconnected = False
        #: ``(code, reason)`` of the close the peer sent, once it did.
        self.peer_close: tuple[int, str] | None = None
        #: The close this side sends after a protocol error (1009), if any.
        self.protocol_error: tuple[int, str] | None = None
        # The ASGI server answers pings itself: a flood is its business.
        self.flooded = False
        #: No direct path: every frame goes through the writer and the sender.
        self.direct = False
        self.unsent = 0

    def attach(self, wake_writer: Callable[[], None]) -> None:
        # The ASGI server writes control frames itself: nothing to wake for.
        pass

    async def receive(self) -> bytes | None:
        if self.protocol_error is not None or self.disconnected:
            await trio.lowlevel.checkpoint()
            return None
        while True:
            message = await self._receive()
            kind = message.get("type")
            if kind == "websocket.receive":
                break
            if kind == "websocket.disconnect":
                self.disconnected = True
                code = int(message.get("code", _NO_STATUS))
                if code != CloseCode.ABNORMAL_CLOSURE:
                    self.peer_close = (code, str(message.get("reason") or ""))
                return None
            logger.debug("ignoring ASGI message %r", kind)
        data = message.get("bytes")
        if data is None:
            # Text messages are read as bytes too: the wire format is binary.
            data = str(message.get("text") or "").encode()
        if len(data) > self._max_message_size:
            self.protocol_error = (
                CloseCode.MESSAGE_TOO_BIG,
                f"message of {len(data)} bytes is over the limit of {self._max_message_size}",
            )
            return None
        return bytes(data)

    def next_buffered(self) -> bytes | None:
        # ASGI hands over one message per receive.
        return None

    def send_now(self, data: bytes) -> bool:
        raise RuntimeError("ASGI has no direct path; check .direct first")

    async def abort(self) -> None:
        """Stop sending: the ASGI call returns and the ASGI server drops the connection."""
        self._broken = True
        self._outbox.close()
        await trio.lowlevel.checkpoint()

    async def write(self, frames: list[bytes]) -> None:
        messages: list[MutableMapping[str, Any]] = [
            {"type": "websocket.send", "bytes": frame_payload(frame)} for frame in frames if frame
        ]
        await self._hand_over(messages)

    async def _hand_over(self, messages: list[MutableMapping[str, Any]]) -> None:
        """Give ``messages`` to the sender and wait until it sent them."""
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("the ASGI server refused a send: the peer is gone")
        if not messages:
            await trio.lowlevel.checkpoint()
            return
        done = trio.Event()
        try:
            self._outbox.send_nowait((messages, done))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # Stopped by abort(), or the sender ended.
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("the sender is stopped") from None
        await done.wait()
        if self._broken:
            raise trio.BrokenResourceError("the ASGI server refused a send: the peer is gone")

    async def run_sender(self) -> None:
        """The sender task: pass each batch to the ASGI ``send``, in order, until closed."""
        async with self._outbox_out:
            try:
                async for messages, done in self._outbox_out:
                    try:
                        for message in messages:
                            await self._send(message)
                    except Exception as exc:
                        # Hypercorn drops sends to a closed connection; other
                        # ASGI servers raise (OSError, their own disconnect error).
                        logger.debug("ASGI send failed: %r", exc)
                        self._broken = True
                        done.set()
                        return
                    done.set()
            finally:
                # Ended (or cancelled with the ASGI call, as when the ASGI
                # server shuts down): whoever waits on a batch, or hands one
                # over later, learns at once that it was not sent.
                self._broken = True
                with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                    while True:
                        self._outbox_out.receive_nowait()[1].set()

    async def ping(self) -> None:
        # ASGI has no ping: see the module docstring. The heartbeat still
        # wakes on time to enforce write_timeout.
        await trio.lowlevel.checkpoint()

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        # A send may still be stuck in the ASGI server (the writer's wait was
        # cancelled): the close is queued behind it, and the caller bounds
        # the wait; the ASGI call then returns once that send ends.
        if self.protocol_error is not None:
            code, reason = self.protocol_error
        messages: list[MutableMapping[str, Any]] = [
            {"type": "websocket.send", "bytes": frame_payload(frame)} for frame in pending if frame
        ]
        if not self.disconnected:
            messages.append({"type": "websocket.close", "code": code, "reason": reason})
        try:
            await self._hand_over(messages)
        except trio.BrokenResourceError:
            return
        finally:
            # Nothing is sent after the close: the sender ends.
            self._outbox.close()
        # Wait for the peer's close (the caller bounds the wait).
        while not self.disconnected:
            message = await self._receive()
            if message.get("type") == "websocket.disconnect":
                self.disconnected = True


if TYPE_CHECKING:  # mypy checks that the class implements the Transport protocol

    def _implements_transport(transport: ASGITransport) -> Transport:
        return transport


def request_from_scope(scope: Scope) -> Request:
    """The :class:`trioroom.Request` of an ASGI ``http`` or ``websocket`` scope.

    The target is the path as the client sent it (``raw_path``, mount point
    included) with the query string; the address is the ASGI ``client``.
    """
    raw = scope.get("raw_path")
    if raw:
        path = bytes(raw).decode("latin-1").partition("?")[0]
    else:
        path = str(scope.get("root_path", "")) + str(scope.get("path", "/"))
        if not path.startswith(scope.get("root_path", "")):
            path = str(scope.get("path", "/"))
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    target = f"{path}?{query}" if query else path
    headers = Headers(
        [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in scope["headers"]]
    )
    client = scope.get("client")
    address = str(client[0]) if client else None
    return Request(target, headers, address)


def local_path(scope: Scope) -> str:
    """The scope's path below its mount point (``root_path``)."""
    path = str(scope.get("path", "/"))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def serve_asgi_websocket(
    server: ASGIServer, scope: Scope, receive: Receive, send: Send, *, path_matches: bool = True
) -> None:
    """Admit, accept and serve one ASGI WebSocket connection (see the module docstring).

    ``path_matches`` says the request is for the endpoint's path; otherwise
    it is refused with 404 after the same screening as on the native engine.
    Never raises for a failing connection: errors are logged.
    """
    message = await receive()
    if message.get("type") != "websocket.connect":
        # Gone before the handshake began.
        return
    denial = _DENIAL in (scope.get("extensions") or {})
    admission = server.admission
    trequest = admission.client_request(request_from_scope(scope))
    try:
        # The listeners are the ASGI server's: only allowed_hosts applies.
        admission.screen(trequest, loopback_only=False)
        if not path_matches:
            raise Reject(404, "Not Found")
    except Reject as exc:
        await _reject(server, send, exc, denial)
        return
    # The ASGI server read the request already: the cap bounds how many wait
    # for authorize and the accept from one address.
    if not admission.begin_handshake(trequest.remote_address):
        await _reject(server, send, Reject(429, HANDSHAKES_IN_PROGRESS), denial)
        return
    # Answered after the counters are given back (leaving the handshake
    # block): a client that sees its refusal finds the server's slots free.
    refusal: Reject | None = None
    accepting = False
    try:
        # Counted while admitted, as on the native engine, so that concurrent
        # handshakes cannot exceed max_connections.
        with admission.handshake(trequest) as handshake:
            # One deadline for admission (authorize included) and the accept.
            with trio.move_on_after(server.settings.handshake_timeout) as deadline:
                try:
                    claims = await admission.admit(trequest)
                except Reject as exc:
                    refusal = exc
                else:
                    # Offer the trioroom.v1 extension to clients that ask for it.
                    proposed = scope.get("subprotocols") or ()
                    subprotocol = SUBPROTOCOL if SUBPROTOCOL in proposed else None
                    accepting = True
                    await send({"type": "websocket.accept", "subprotocol": subprotocol})
            if deadline.cancelled_caught:
                if accepting:
                    # The accept may be on its way: too late for a refusal.
                    server.metrics.handshakes_rejected[408] += 1
                else:
                    # Answered, unlike a silent return, which Hypercorn turns into a 500.
                    refusal = Reject(408, "Handshake timed out")
            elif refusal is None:
                transport = ASGITransport(receive, send, server.settings.max_message_size)
                handshake.handed_over()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(transport.run_sender)
                    try:
                        await server.handle_transport(
                            transport, trequest, claims, extended=subprotocol is not None
                        )
                    finally:
                        # Ends the sender once it has sent what it holds.
                        await transport.abort()
    except Exception:
        logger.exception("connection from %s failed", trequest.remote_address)
    if refusal is not None:
        await _reject(server, send, refusal, denial)


async def _reject(server: ASGIServer, send: Send, exc: Reject, denial: bool) -> None:
    server.metrics.handshakes_rejected[exc.status] += 1
    await _answer(server, send, exc, denial)


async def _answer(server: ASGIServer, send: Send, exc: Reject, denial: bool) -> None:
    """Refuse the handshake: the status and body where the ASGI server can send them."""
    with trio.move_on_after(server.settings.handshake_timeout):
        if not denial:
            # Without the denial extension a close before the accept is all
            # ASGI offers; the ASGI server answers it with 403.
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        body = (exc.body + "\n").encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})


class ASGIApp:
    """An ASGI 3 application serving a :class:`~trioroom.Server` (``Server.asgi_app()``).

    * ``websocket`` requests for ``settings.path`` (below the mount point) are
      the trioroom endpoint; other WebSocket paths are refused with 404.
    * ``http`` requests: ``/healthz`` and ``/metrics`` (see
      :class:`trioroom.web.WebApp`) unless ``web=False``; 404 otherwise.
    * ``lifespan``: runs :meth:`lifespan` (the backplane) while served.

    Mounted below a framework that does not pass ``lifespan`` on (Starlette's
    ``Mount``), enter :meth:`lifespan` from the framework's own lifespan when
    the server has a distributed backplane (``--redis``).

    Args:
        server: The server whose connections this application serves.
        web: Serve ``/healthz`` and ``/metrics`` beside the endpoint.
    """

    def __init__(self, server: ASGIServer, *, web: bool = True) -> None:
        self.server = server
        self.web: WebApp | None = None
        if web:
            self.web = WebApp(server, demo=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            matches = local_path(scope) == self.server.settings.path
            await serve_asgi_websocket(self.server, scope, receive, send, path_matches=matches)
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the server's background work (its backplane) for the body of the block.

        On leaving, the server shuts down (:meth:`Server.shutdown`): open
        connections are closed with 1001 and new ones refused with 503.
        """
        server = self.server
        async with trio.open_nursery() as nursery:
            await server.start_backplane(nursery)
            try:
                yield
            finally:
                with trio.CancelScope(shield=True):
                    await server.shutdown()
                nursery.cancel_scope.cancel()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message.get("type") != "lifespan.startup":
            return
        try:
            async with self.lifespan():
                await send({"type": "lifespan.startup.complete"})
                while (await receive()).get("type") != "lifespan.shutdown":
                    pass
        except Exception as exc:
            logger.exception("lifespan failed")
            await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, send: Send) -> None:
        path = local_path(scope)
        request = request_from_scope(scope)
        response: Response | None = None
        if self.web is not None and scope.get("method", "GET") in ("GET", "HEAD"):
            # Routed by the path below the mount point.
            query = _query(scope)
            target = f"{path}?{query}" if query else path
            response = await self.web(Request(target, request.headers, request.remote_address))
        if response is None:
            status = 426 if path == self.server.settings.path else 404
            body = b"Upgrade Required\n" if status == 426 else b"Not Found\n"
            self.server.metrics.http_responses[status] += 1
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
        else:
            status, body = response.status_code, bytes(response.body or b"")
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.raw_items()
                if name.lower() not in _HOP_BY_HOP
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _query(scope: Scope) -> str:
    return bytes(scope.get("query_string", b"")).decode("latin-1")
