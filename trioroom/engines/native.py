"""The native engine: websockets' sans-I/O ``ServerProtocol`` over a trio stream.

The protocol object parses what the peer sends and produces control frames
(pong, close). Data frames never go through it: the connection's writer
sends frames that were serialised once for all recipients
(:mod:`trioroom.wsframe`), which is valid because a server's frames are
unmasked and no extension is negotiated.

Only the reader task calls :meth:`StreamTransport.receive` and only the writer
task calls :meth:`StreamTransport.write`, so the stream never sees two
concurrent sends; control frames wait in a list that the writer flushes first.

On a plain TCP socket the transport also has a direct path (see "Delivery" in
``docs/concepts.md``): :meth:`StreamTransport.send_now` lets the task that has
a frame hand it to the kernel at once, without waking the writer, and reads
wait for readiness once and then call ``recv`` without another trip through
the scheduler. What the kernel does not take stays here, in front of
everything else, until the writer has written it.

:func:`serve_stream` runs the opening handshake on an accepted stream: one
deadline for reading the request, admission (``authorize`` included) and the
answer; then the connection is the server's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ..exceptions import Reject
from ..extension import SUBPROTOCOL
from ..handshake import HANDSHAKES_IN_PROGRESS, Request
from .base import Endpoint, Transport

__all__ = ["StreamTransport", "close_socket_now", "close_stream", "receive_some", "send_all"]


def close_socket_now(stream: trio.abc.Stream) -> bool:
    """Close a plain socket synchronously; ``False`` for other streams (TLS, memory)."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
        return True
    return False


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close without waiting for anything; a plain socket closes synchronously."""
    if not close_socket_now(stream):
        await trio.aclose_forcefully(stream)


async def receive_some(stream: trio.abc.Stream) -> bytes | bytearray:
    """Up to ``RECEIVE_SIZE`` bytes from ``stream``; ``b""`` at EOF.

    On a plain socket: one readiness wait, then a plain ``recv``. trio's own
    ``receive_some`` also yields after a ``recv`` that succeeded at once: two
    trips through the scheduler per read instead of one.
    """
    if not isinstance(stream, trio.SocketStream):
        return await stream.receive_some(RECEIVE_SIZE)
    sock = stream.socket
    while True:
        await trio.lowlevel.wait_readable(_open_socket(sock))
        data = _read_now(sock)
        if data is not None:
            return data


def _open_socket(sock: trio.socket.SocketType) -> trio.socket.SocketType:
    if sock.fileno() < 0:
        raise trio.ClosedResourceError("the socket was closed")
    return sock


def _read_now(sock: trio.socket.SocketType) -> bytes | None:
    """A non-blocking ``recv`` after a readiness wait; ``None`` if nothing came after all."""
    # The number is asked each time, never kept: once the socket is closed
    # it may belong to another connection.
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the socket was closed")
    try:
        return os.read(fd, RECEIVE_SIZE)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(exc) from exc


async def send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """Write ``data``; on a plain socket, at once when the kernel takes it all.

    trio's ``send_all`` yields to the scheduler even when the socket has room;
    this writes without yielding and leaves only the rest to it.
    """
    if isinstance(stream, trio.SocketStream):
        fd = stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
        if sent == len(data):
            return
        data = data[sent:]
    await stream.send_all(data)


RECEIVE_SIZE = 65536
#: Control frames (pongs) allowed to wait for the writer. A peer that sends
#: pings faster than it reads the pongs is flooding: it gets closed with 1008,
#: whatever the ping rate limit.
MAX_PENDING_CONTROL = 128
#: Close codes that only describe a closure and never go on the wire.
NOT_SENDABLE = frozenset({1005, 1006, 1015})


class StreamTransport:
    """A WebSocket connection on a trio stream, after the opening handshake."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: ServerProtocol,
        *,
        ping_rate: float | None = None,
        ping_burst: int = 1,
        preface: bytes = b"",
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        # A plain socket gets the direct path; TLS and in-memory streams go
        # through their own send_all and receive_some.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        #: True when :meth:`send_now` can write without the writer task.
        self.direct = self._socket is not None
        # The end of a frame send_now could not write: the writer sends it
        # before anything else, and close() before its close frame.
        self._unsent = b""
        # The handshake's answer, when serve_stream left it to go out with the
        # first frame (one write fewer per connection): before anything else.
        self._preface = preface
        # The peer's pings: a token bucket, refilled when a ping arrives.
        self._ping_rate = ping_rate or 0.0
        self._ping_burst = float(ping_burst)
        self._ping_tokens = float(ping_burst)
        self._ping_at: float | None = None
        # Usually holds one message: a list is smaller than a deque.
        self._messages: list[bytes] = []
        self._fragments: list[bytes] | None = None
        self._control: list[bytes] = []
        self._final: list[bytes] = []
        self._pongs: dict[bytes, trio.Event] = {}
        self._wake: Callable[[], None] = lambda: None
        self._ended = False
        self._eof = False
        # True while a write is under way; still True after a cancelled write,
        # when the stream may hold half a frame and must not get another.
        self._mid_write = False
        self.peer_close: tuple[int, str] | None = None
        #: Set when the peer sent pings faster than the ping rate limit
        #: allows, or faster than it reads the pongs.
        self.flooded = False

    def attach(self, wake_writer: Callable[[], None]) -> None:
        self._wake = wake_writer

    # -- inbound -----------------------------------------------------------

    async def receive(self) -> bytes | None:
        messages = self._messages
        while not messages:
            if self._ended:
                return None
            sock = self._socket
            if self._preface:
                # Nothing was written yet: the writer sends the answer now,
                # rather than leave the client waiting for it.
                self._wake()
            try:
                if sock is None:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                else:
                    # receive_some() inlined: this frame waits for the whole
                    # life of an idle connection, and a coroutine fewer in the
                    # chain is memory saved per connection.
                    await trio.lowlevel.wait_readable(_open_socket(sock))
                    read = _read_now(sock)
                    if read is None:
                        continue
                    data = read
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data:
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
                self._ended = self._eof = True
            self._take_events()
        return messages.pop(0)

    def next_buffered(self) -> bytes | None:
        """A message that arrived with the last read, without waiting; else ``None``."""
        messages = self._messages
        return messages.pop(0) if messages else None

    def _take_events(self) -> None:
        protocol = self._protocol
        over_limit = False
        for frame in protocol.events_received():
            assert isinstance(frame, Frame)  # requests come only before the handshake
            opcode = frame.opcode
            if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
                # Text frames are read as bytes too: the wire format is binary.
                if frame.fin:
                    self._messages.append(bytes(frame.data))
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is Opcode.CONT:
                if self._fragments is not None:
                    self._fragments.append(bytes(frame.data))
                    if frame.fin:
                        self._messages.append(b"".join(self._fragments))
                        self._fragments = None
            elif opcode is Opcode.PONG:
                waiter = self._pongs.pop(bytes(frame.data), None)
                if waiter is not None:
                    waiter.set()
            elif opcode is Opcode.PING:
                if self._ping_rate and not self._take_ping_token():
                    over_limit = True
            elif opcode is Opcode.CLOSE:
                rcvd = protocol.close_rcvd
                if rcvd is not None:
                    self.peer_close = (int(rcvd.code), rcvd.reason)
        if protocol.parser_exc is not None or protocol.state is not State.OPEN:
            # A protocol error (the protocol already answered with a close
            # frame: 1002, 1007 or 1009) or the peer's close: stop reading.
            self._ended = True
        if over_limit and not self._ended:
            # The protocol already queued the pongs: none of them is sent.
            protocol.data_to_send()
            self._control.clear()
            self.flooded = True
            self._ended = True
            return
        self._take_output()

    def _take_ping_token(self) -> bool:
        now = trio.current_time()
        if self._ping_at is not None:
            refill = (now - self._ping_at) * self._ping_rate
            self._ping_tokens = min(self._ping_burst, self._ping_tokens + refill)
        self._ping_at = now
        if self._ping_tokens >= 1.0:
            self._ping_tokens -= 1.0
            return True
        return False

    def _take_output(self) -> None:
        output = self._protocol.data_to_send()
        if output and self._protocol.state is not State.OPEN:
            # The close frame (ours after a protocol error, or the echo of the
            # peer's): written by close(), after frames queued before it.
            self._final.extend(chunk for chunk in output if chunk)
            return
        if output:
            self._control.extend(chunk for chunk in output if chunk)
            if len(self._control) > MAX_PENDING_CONTROL and not self._ended:
                self._control.clear()
                self.flooded = True
                self._ended = True
            self._wake()

    @property
    def protocol_error(self) -> tuple[int, str] | None:
        """The close the protocol sent after a protocol error, if any."""
        if self._protocol.parser_exc is None:
            return None
        sent = self._protocol.close_sent
        if sent is None:
            return None
        return int(sent.code), sent.reason

    # -- outbound ----------------------------------------------------------

    @property
    def unsent(self) -> int:
        """Bytes :meth:`send_now` left for the writer."""
        return len(self._unsent)

    def send_now(self, data: bytes) -> bool:
        """Hand ``data`` to the kernel without waiting; ``False`` if some is left.

        Only for a direct transport, and only when no write is under way and
        nothing is left from before (the caller's queue is empty and its
        writer idle). What the kernel does not take stays in the transport,
        and the writer, once woken, writes it first. Raises
        ``trio.BrokenResourceError`` when the peer is gone.
        """
        sock = self._socket
        assert sock is not None and not self._unsent and not self._mid_write
        # The same write as send_all()'s, kept inline: this runs once per
        # direct write, where a function call is a measurable share of a
        # delivery. The number is asked each time, never kept: once the
        # socket is closed it may belong to another connection.
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        if self._preface:
            data = self._preface + data
            self._preface = b""
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(exc) from exc
        if sent == len(data):
            return True
        self._unsent = data[sent:]
        return False

    async def write(self, frames: list[bytes]) -> None:
        # A cancellation that arrives before the first byte leaves the stream
        # clean (and the control frames in place for close()); only one that
        # interrupts send_all itself can leave half a frame behind.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._control:
            frames = self._control + frames
            self._control = []
        if self._unsent:
            # The end of a frame already begun on the wire: nothing may come
            # before it, pongs included.
            frames = [self._unsent, *frames]
            self._unsent = b""
        if self._preface:
            frames = [self._preface, *frames]
            self._preface = b""
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if not data:
            # Only wake-ups: trio's send_all(b"") is a checkpoint, and a
            # cancellation there would look like a write cut in half.
            return
        self._mid_write = True
        await self._stream.send_all(data)
        self._mid_write = False

    async def ping(self) -> None:
        payload = os.urandom(4)
        waiter = trio.Event()
        self._pongs[payload] = waiter
        try:
            self._protocol.send_ping(payload)
            self._take_output()
            await waiter.wait()
        finally:
            self._pongs.pop(payload, None)

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        self._ended = True
        await close_stream(self._stream)

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        protocol = self._protocol
        # The end of a frame begun by send_now always goes first: the close
        # frame must not land in the middle of a frame.
        before = [self._unsent, *self._control] if self._unsent else self._control
        if self._preface:
            before = [self._preface, *before]
            self._preface = b""
        self._unsent = b""
        self._control = []
        if protocol.state is State.OPEN and code not in NOT_SENDABLE:
            protocol.send_close(code, reason)
        closing = [chunk for chunk in protocol.data_to_send() if chunk]
        if self._mid_write:
            await close_stream(self._stream)
            return
        try:
            # The close frame comes last: nothing may follow it.
            data = b"".join(before + pending + self._final + closing)
            if data:
                await send_all(self._stream, data)
            # Read until the peer's close frame or EOF, so the peer sees a clean
            # closing handshake and unread input does not turn our close into
            # a TCP reset; the caller bounds the wait.
            while not self._eof and protocol.close_rcvd is None:
                try:
                    chunk = await self._stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not chunk:
                    break
                protocol.receive_data(chunk)
                protocol.events_received()
                protocol.data_to_send()
        finally:
            self._ended = True
            await close_stream(self._stream)


if TYPE_CHECKING:  # mypy checks that the class implements the Transport protocol

    def _implements_transport(transport: StreamTransport) -> Transport:
        return transport


logger = logging.getLogger("trioroom.server")
wire_logger = logging.getLogger("trioroom.wire")
_PLAIN_HTTP = object()


async def serve_stream(
    endpoint: Endpoint, stream: trio.abc.Stream, *, loopback_only: bool = False
) -> None:
    """Run the opening handshake on ``stream``, then serve the connection.

    ``loopback_only`` says the stream came from listeners bound only to
    loopback addresses (see :meth:`trioroom.Server.handle_stream`). Never
    raises: every failure is logged and the stream is closed.
    """
    admission = endpoint.admission
    settings = endpoint.settings
    remote = remote_address(stream)
    # A trusted proxy carries many clients: each is counted by its
    # forwarded address once the request is read (see _open).
    capped = None if remote in admission.trusted_proxies else remote
    if not await _begin_handshake(endpoint, capped, stream):
        await close_stream(stream)
        return
    protocol = ServerProtocol(
        max_size=settings.max_message_size,
        logger=wire_logger,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        select_subprotocol=_select_extension,
    )
    admission.handshaking += 1
    counted = True
    try:
        try:
            opened = await _open(endpoint, stream, protocol, remote, loopback_only)
        finally:
            admission.end_handshake(capped)
        if opened is None:
            return
        request, claims, preface = opened
        transport = StreamTransport(
            stream,
            protocol,
            ping_rate=settings.ping_rate_limit,
            ping_burst=settings.ping_burst,
            preface=preface,
        )
        # handle_transport counts the connection from here on.
        admission.handshaking -= 1
        counted = False
        extended = protocol.subprotocol == SUBPROTOCOL
        await endpoint.handle_transport(transport, request, claims, extended=extended)
    except Exception:
        logger.exception("connection from %s failed", remote)
    finally:
        if counted:
            admission.handshaking -= 1
        # A plain socket closes synchronously: no shielded scope needed.
        if not close_socket_now(stream):
            with trio.CancelScope(shield=True):
                await close_stream(stream)


async def _open(
    endpoint: Endpoint,
    stream: trio.abc.Stream,
    protocol: ServerProtocol,
    remote: str | None,
    loopback_only: bool,
) -> tuple[Request, Any, bytes] | None:
    """The opening handshake: ``(request, claims, preface)`` once accepted, else ``None``.

    One deadline, ``handshake_timeout``, covers all of it: reading the
    request, deciding (``authorize`` included) and sending the answer. On a
    plain socket the 101 is not sent here but returned as ``preface``, to go
    out in one write with the first frame (the ``root`` join_ack, which
    follows at once); a request that resumes a session gets it at once, as
    finding the session may wait.
    """
    admission = endpoint.admission
    request: Request | None = None
    forwarded_count: str | None = None
    accepted = False
    try:
        with trio.move_on_after(endpoint.settings.handshake_timeout) as deadline:
            ws_request = await _read_request(stream, protocol)
            if ws_request is None:
                return None
            request = admission.client_request(Request(ws_request.path, ws_request.headers, remote))
            capped = False
            if remote in admission.trusted_proxies:
                capped = not admission.begin_handshake(request.remote_address)
                if not capped:
                    forwarded_count = request.remote_address
            if capped:
                response = protocol.reject(429, HANDSHAKES_IN_PROGRESS + "\n")
                claims = None
            else:
                response, claims = await _negotiate(
                    endpoint, request, ws_request, protocol, loopback_only
                )
            if response.status_code != 101 and claims is not _PLAIN_HTTP:
                endpoint.metrics.handshakes_rejected[response.status_code] += 1
            protocol.send_response(response)
            answer = b"".join(protocol.data_to_send())
            if (
                response.status_code == 101
                and isinstance(stream, trio.SocketStream)
                and "resume" not in request.query
            ):
                accepted = True
                return request, claims, answer
            await send_all(stream, answer)
            if response.status_code != 101:
                return None
            accepted = True
            return request, claims, b""
    finally:
        # Refused, timed out, cancelled or failed after admission: the
        # slot admit() reserved goes back.
        if request is not None and not accepted:
            admission.release(request)
        admission.end_handshake(forwarded_count)
    if deadline.cancelled_caught:
        endpoint.metrics.handshakes_rejected[408] += 1
        logger.debug("handshake from %s timed out", remote)
    return None


async def _negotiate(
    endpoint: Endpoint,
    request: Request,
    ws_request: WsRequest,
    protocol: ServerProtocol,
    loopback_only: bool,
) -> tuple[Response, Any]:
    try:
        # Before process_request: /metrics and /healthz need it too.
        endpoint.admission.screen(request, loopback_only)
    except Reject as exc:
        return protocol.reject(exc.status, exc.body + "\n"), None
    if endpoint.process_request is not None:
        response = await endpoint.process_request(request)
        if response is not None:
            # A plain HTTP answer (page, health check): not a refused handshake.
            return response, _PLAIN_HTTP
    if request.path != endpoint.settings.path:
        return protocol.reject(404, "Not Found\n"), None
    try:
        claims = await endpoint.admission.admit(request)
    except Reject as exc:
        return protocol.reject(exc.status, exc.body + "\n"), None
    return protocol.accept(ws_request), claims


async def _begin_handshake(
    endpoint: Endpoint, address: str | None, stream: trio.abc.Stream
) -> bool:
    """Count a handshake at accept; over the per-address cap, answer 429 unread."""
    if endpoint.admission.begin_handshake(address):
        return True
    endpoint.metrics.handshakes_rejected[429] += 1
    response = ServerProtocol(logger=wire_logger).reject(429, HANDSHAKES_IN_PROGRESS + "\n")
    with trio.move_on_after(1):
        try:
            await stream.send_all(response.serialize())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    return False


async def _read_request(stream: trio.abc.Stream, protocol: ServerProtocol) -> WsRequest | None:
    """Feed the protocol until it parsed the HTTP request; ``None`` on EOF or garbage."""
    # A client writes its request as soon as it is connected, so it is often
    # there by the time the connection is accepted: read before waiting, and
    # the wait (two epoll_ctl calls and a trip through the scheduler) is saved.
    sock = stream.socket if isinstance(stream, trio.SocketStream) else None
    while True:
        try:
            early = _read_now(sock) if sock is not None else None
            sock = None
            data = early if early is not None else await receive_some(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            if isinstance(event, WsRequest):
                return event
        output = protocol.data_to_send()
        if output or not data:
            # The request was invalid (the protocol wrote an error response)
            # or the peer went away.
            reply = b"".join(output)
            if reply:
                with trio.move_on_after(1):
                    await stream.send_all(reply)
            return None


def remote_address(stream: trio.abc.Stream) -> str | None:
    """The IP address of the peer of ``stream`` (through TLS), when it has one."""
    inner: Any = stream
    while inner is not None:
        sock = getattr(inner, "socket", None)
        if sock is not None:
            try:
                return str(sock.getpeername()[0])
            except OSError:
                return None
        inner = getattr(inner, "transport_stream", None)
    return None


def _select_extension(protocol: ServerProtocol, offered: Sequence[Any]) -> Any:
    """Pick ``trioroom.v1`` when offered; never refuse a client for its subprotocols."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None
