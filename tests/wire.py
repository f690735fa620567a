"""A raw wsrooms client for tests: websockets' sans-I/O ClientProtocol on a trio socket.

It speaks the protocol frame by frame, so tests see exactly what the server
sends, and it can misbehave on purpose (raw bytes, TCP reset, never read).
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from trioroom import Server
from trioroom.protocol import Message

StartServer = Callable[..., Awaitable[tuple[Server, tuple[str, int]]]]

#: Upper bound on any single wait; only reached when something is broken.
WAIT = 60

#: Why a test that checks the close code a client sent is ``not_asgi``.
HYPERCORN_CLIENT_CLOSE = (
    "Hypercorn reports every close the client starts as 1006 to the ASGI app, "
    "whatever code the client sent (pgjones/hypercorn#127)"
)


class HandshakeRejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status} {body!r}")
        self.status = status
        self.body = body


class RawClient:
    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.frames: deque[Frame] = deque()
        self.id = ""
        self.close_code: int | None = None
        self.close_reason = ""
        #: Set by :meth:`reset`: what this socket had read is lost with it.
        self.was_reset = False

    @classmethod
    async def connect(
        cls,
        address: tuple[str, int] | trio.abc.Stream,
        path: str = "/ws",
        headers: list[tuple[str, str]] | None = None,
        *,
        read_root_ack: bool = True,
        subprotocols: list[str] | None = None,
    ) -> RawClient:
        """Connect over TCP to ``(host, port)``, or over a stream you opened."""
        if isinstance(address, tuple):
            host, port = address
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        else:
            host, port, stream = "localhost", 80, address
        protocol = ClientProtocol(
            parse_uri(f"ws://{host}:{port}{path}"),
            max_size=None,
            subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        )
        request = protocol.connect()
        for name, value in headers or []:
            request.headers[name] = value
        protocol.send_request(request)
        client = cls(stream, protocol)
        await client._flush()
        with trio.fail_after(WAIT):
            response = await client._read_response()
        if response.status_code != 101:
            await stream.aclose()
            raise HandshakeRejected(response.status_code, response.body or b"")
        if read_root_ack:
            ack = await client.recv()
            assert (ack.room, ack.event) == ("root", "join_ack"), ack
            client.id = ack.src
        return client

    async def _read_response(self) -> Response:
        while True:
            data = await self.stream.receive_some(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            response = None
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    response = event
                else:
                    # Frames that arrived in the same read as the 101.
                    self.frames.append(event)
            if response is not None:
                return response
            if not data:
                raise ConnectionError("server closed during handshake")

    async def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            await self.stream.send_all(data)

    async def recv_frame(self) -> Frame:
        """The next data or close frame (pings are answered by the protocol)."""
        with trio.fail_after(WAIT):
            while True:
                if self.was_reset:
                    # A reader that was between reading bytes and returning
                    # them when the socket was dropped: a client whose link
                    # broke never sees them (a resume asks for them again).
                    raise ConnectionError("connection reset by this client")
                while self.frames:
                    frame = self.frames.popleft()
                    if frame.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CLOSE):
                        if frame.opcode is Opcode.CLOSE and self.protocol.close_rcvd:
                            self.close_code = self.protocol.close_rcvd.code
                            self.close_reason = self.protocol.close_rcvd.reason
                        return frame
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                self.frames.extend(self.protocol.events_received())  # type: ignore[arg-type]
                await self._flush_quietly()
                if not data and not self.frames:
                    raise ConnectionError("connection closed")

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def recv(self) -> Message:
        frame = await self.recv_frame()
        assert frame.opcode is Opcode.BINARY, f"expected a binary frame, got {frame}"
        return Message.decode(frame.data)

    async def recv_until(self, event: str, room: str | None = None) -> Message:
        """Skip frames until one with ``event`` (and ``room``) arrives."""
        while True:
            msg = await self.recv()
            if msg.event == event and (room is None or msg.room == room):
                return msg

    async def wait_closed(self) -> tuple[int | None, str]:
        """Read until the close frame; returns its code and reason."""
        while True:
            try:
                frame = await self.recv_frame()
            except ConnectionError:
                return self.close_code, self.close_reason
            if frame.opcode is Opcode.CLOSE:
                return self.close_code, self.close_reason

    async def send(self, msg: Message) -> None:
        self.protocol.send_binary(msg.encode())
        await self._flush()

    async def send_text(self, data: bytes) -> None:
        self.protocol.send_text(data)
        await self._flush()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def join(self, room: str) -> Message:
        await self.send(Message(room, "join"))
        return await self.recv_until("join_ack", room)

    async def leave(self, room: str) -> Message:
        await self.send(Message(room, "leave", self.id, self.id, self.id))
        return await self.recv_until("leave_ack", room)

    async def sync(self) -> None:
        """Wait until the server handled everything sent so far.

        Sends a direct message to ourselves; the server keeps FIFO order per
        sender and recipient, so once it comes back every earlier frame from
        us was handled and every frame the server queued to us before it has
        been read. Returns the frames read in between to the caller's queue.
        """
        marker = Message("root", "__sync__", self.id, "", b"")
        await self.send(marker)
        skipped: list[Frame] = []
        while True:
            frame = await self.recv_frame()
            if frame.opcode is Opcode.BINARY:
                msg = Message.decode(frame.data)
                if msg.event == "__sync__" and msg.dst == self.id:
                    self.frames.extendleft(reversed(skipped))
                    return
            skipped.append(frame)

    async def expect_nothing(self) -> None:
        """Assert no frame is pending from the server (checked via :meth:`sync`)."""
        marker = Message("root", "__sync__", self.id, "", b"")
        await self.send(marker)
        msg = await self.recv()
        assert msg.event == "__sync__", f"unexpected frame {msg}"

    async def close(self) -> None:
        try:
            self.protocol.send_close(1000)
            await self._flush()
            with trio.move_on_after(WAIT):
                await self.wait_closed()
        except Exception:
            pass
        await self.stream.aclose()

    def reset(self) -> None:
        """Drop the TCP connection with a RST, no close frame.

        Frames read but not yet returned are lost with it.
        """
        self.was_reset = True
        self.frames.clear()
        sock: Any = self.stream.socket  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


async def wait_until(predicate: Callable[[], bool], limit: float = 60) -> None:
    """Poll ``predicate`` until true; fail after ``limit`` seconds (only when broken)."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - server state has no event to wait on
            await trio.sleep(0.005)


async def memory_client(
    server: Server,
    nursery: trio.Nursery,
    *,
    lockstep: bool = False,
    **kwargs: Any,
) -> RawClient:
    """A client connected to ``server`` over in-memory streams (works with autojump_clock).

    ``lockstep`` streams have no buffer: a client that stops reading makes
    the server's writes block, like a full TCP window.
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    nursery.start_soon(server.handle_stream, server_stream)
    return await RawClient.connect(client_stream, **kwargs)


async def start_hypercorn(
    nursery: trio.Nursery, app: Any, _trigger: Any = None, **options: Any
) -> tuple[str, int]:
    """Serve the ASGI ``app`` with Hypercorn's trio worker on 127.0.0.1, port 0.

    Runs in ``nursery`` (cancelled with it); returns the bound address.
    ``_trigger`` is Hypercorn's ``shutdown_trigger``; ``options`` set fields
    of Hypercorn's ``Config``.
    """
    from functools import partial

    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    for name, value in options.items():
        setattr(config, name, value)
    binds = await nursery.start(partial(serve, app, config, mode="asgi", shutdown_trigger=_trigger))
    host, _, port = binds[0].removeprefix("http://").rpartition(":")
    return host, int(port)
