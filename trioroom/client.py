"""A Trio client for trioroom (and any server speaking the wsrooms protocol).

Built on trio-websocket's client::

    async with trioroom.connect("ws://127.0.0.1:8080/ws") as root:
        lobby = await root.join("lobby")          # returns once join_ack arrived
        await lobby.send("chat", "hello")         # broadcast to the other members
        async for msg in lobby:                   # custom events of that room
            print(msg.src, msg.event, msg.text)

``connect`` yields a :class:`Client`, which is also the :class:`Room` object of
``root`` (the room every connection is in). See ``docs/client.md``.

How it runs: inside the ``async with`` a small nursery runs trio-websocket's
reader, a **reader** that decodes frames and routes them by their room field,
a **writer** that owns every write to the socket (so a cancelled ``send`` never
leaves half a frame), and a **dispatcher** that runs the handlers registered
with :meth:`Room.on`, one at a time, in arrival order.

Flow control: each room queues at most ``queue_size`` unread messages, and the
dispatcher at most ``queue_size`` pending handler calls. When a queue is full
the reader waits, so the client stops reading from the socket: the server's
outbound queue for this connection fills up and the server applies its
slow-consumer policy (by default it closes the connection with 4001, which
surfaces here as :class:`ConnectionClosed`). Read the rooms you joined, or
register handlers for their events.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar, cast, overload
from urllib.parse import urlsplit

import trio
import trio_websocket

from .protocol import RESERVED_EVENTS, FrameError, Message, encode

__all__ = [
    "Client",
    "ClientError",
    "ConnectionClosed",
    "ConnectionRejected",
    "MessageHandler",
    "Room",
    "connect",
]

logger = logging.getLogger("trioroom.client")

ROOT = "root"
#: ``async handler(msg)``, registered with :meth:`Room.on`.
MessageHandler = Callable[[Message], Awaitable[Any]]
H = TypeVar("H", bound=MessageHandler)
_NOTICES = frozenset({"new_member", "member_left"})
_HANDLEABLE_RESERVED = _NOTICES
_ABNORMAL = 1006


class ClientError(Exception):
    """Base class of the client's errors."""


class ConnectionClosed(ClientError):
    """The connection is closed, so the operation cannot complete.

    Attributes:
        code: The WebSocket close code (1006 when the connection was lost
            without a close frame).
        reason: The close reason the server gave, if any.
        local: ``True`` when this client closed the connection itself.
    """

    def __init__(self, code: int, reason: str = "", *, local: bool = False) -> None:
        if local:
            text = "connection closed by the client"
        elif code == _ABNORMAL:
            text = f"connection lost (1006): {reason or 'no close frame'}"
        else:
            text = f"connection closed by the server with code {code}"
            if reason:
                text += f": {reason}"
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.local = local

    def _copy(self) -> ConnectionClosed:
        return ConnectionClosed(self.code, self.reason, local=self.local)


class ConnectionRejected(ClientError):
    """The server refused the WebSocket handshake with an HTTP status.

    Attributes:
        status: The HTTP status code (401, 403, 429, 503...).
        body: The response body (the server's short explanation).
    """

    def __init__(self, status: int, body: bytes = b"") -> None:
        text = body.decode(errors="replace").strip()
        super().__init__(f"handshake rejected with HTTP {status}" + (f": {text}" if text else ""))
        self.status = status
        self.body = body


class Room:
    """One room this client joined; get one from :meth:`Client.join`.

    Iterate over it (``async for msg in room``) to receive the room's custom
    events, broadcasts and direct messages alike, as :class:`~trioroom.Message`
    objects; events with a handler registered by :meth:`on` go to the handler
    instead. Membership notices (``new_member``, ``member_left``) update
    :meth:`members` and go to handlers registered for them, never to the
    iteration.

    The iteration ends when the room is left: by :meth:`leave`, or by the
    server removing every member (``Server.close_room``), after which
    :attr:`joined` is false.
    """

    def __init__(self, client: Client | None, name: str, queue_size: int) -> None:
        self._client: Client = client if client is not None else cast("Client", self)
        self.name = name
        # joining -> joined -> leaving -> left; "closed" once the connection ended.
        self._state = "joining"
        self._members: list[str] = []
        self._queue_send, self._queue = trio.open_memory_channel[Message](queue_size)
        self._handlers: dict[str, MessageHandler] = {}
        self._settled = trio.Event()  # join_ack arrived, or the connection ended
        self._left = trio.Event()  # leave_ack arrived, or the connection ended
        self._members_changed = trio.Event()
        self._waiters = 0
        self._error: ConnectionClosed | None = None

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {self._state}>"

    @property
    def id(self) -> str:
        """This client's own connection ID (from the ``src`` of the root ``join_ack``)."""
        return self._client._id

    @property
    def joined(self) -> bool:
        """True while this client is a member of the room."""
        return self._state == "joined"

    def members(self) -> list[str]:
        """A copy of the member IDs, this client included.

        Filled from ``join_ack`` and kept up to date by ``new_member`` and
        ``member_left``. On ``root`` the server may send a shortened list
        (``root_member_list_limit``) and no notices (``root_notices=False``).
        """
        return list(self._members)

    async def wait_members(self, predicate: Callable[[list[str]], bool]) -> list[str]:
        """Wait until ``predicate(members)`` is true; return those members.

        Raises :class:`ConnectionClosed` if the connection ends first and
        ``RuntimeError`` if the room is left. Bound it with a cancel scope.
        """
        await trio.lowlevel.checkpoint()
        while True:
            members = self.members()
            if predicate(members):
                return members
            if self._state != "joined":
                self._raise_not_joined()
            await self._members_changed.wait()

    @overload
    def on(self, event: str) -> Callable[[H], H]: ...
    @overload
    def on(self, event: str, handler: H) -> H: ...
    def on(self, event: str, handler: H | None = None) -> Callable[[H], H] | H:
        """Register ``async handler(msg)`` for ``event`` in this room.

        Use as ``room.on("chat", fn)`` or as a decorator ``@room.on("chat")``.
        Messages of that event go to the handler instead of the iteration.
        ``new_member`` and ``member_left`` may have handlers too (the payload
        is the member's ID). Handlers run one at a time in the client's
        dispatcher task, in arrival order; they may send, join and leave. An
        exception in a handler ends the ``async with connect(...)`` block with
        that exception. Registering again replaces the handler.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("event name must be a non-empty string")
        if event in RESERVED_EVENTS and event not in _HANDLEABLE_RESERVED:
            raise ValueError(f"event {event!r} is handled by the client itself")

        def register(fn: H) -> H:
            self._handlers[event] = fn
            return fn

        if handler is not None:
            return register(handler)
        return register

    def off(self, event: str) -> None:
        """Remove the handler of ``event``; later messages go to the iteration again."""
        self._handlers.pop(event, None)

    async def send(self, event: str, payload: bytes | str = b"", dst: str | None = None) -> None:
        """Send a custom event to the room, or to one member with ``dst``.

        Without ``dst`` the server broadcasts to the other members (or runs
        its handler for the event); with ``dst`` it forwards a direct message
        to that connection ID, keeping this room's name. Returns once the
        frame is queued for the writer: frames go out in the order they were
        sent. Waits while ``queue_size`` frames are already waiting.

        Raises ``ValueError`` for a reserved event name, ``RuntimeError`` if
        the room was left, :class:`ConnectionClosed` if the connection is
        closed.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("event name must be a non-empty string")
        if event in RESERVED_EVENTS:
            raise ValueError(f"event {event!r} is reserved by the protocol; pick another name")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        client = self._client
        client._check_open()
        if self._state != "joined":
            self._raise_not_joined()
        await client._send_data(encode(self.name, event, dst or "", client._id, data))

    async def receive(self) -> Message:
        """The next message of this room.

        Raises :class:`ConnectionClosed` once the connection was closed by
        the server or lost (after the messages that arrived before), and
        ``trio.EndOfChannel`` once the room was left or the client closed.
        """
        try:
            return await self._queue.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error._copy() from None
            raise trio.EndOfChannel from None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def leave(self) -> None:
        """Leave the room; returns once the server's ``leave_ack`` arrived.

        From the call on, no new message of the room is queued; those queued
        before can still be read, then the iteration ends. If the call is
        cancelled while waiting for ``leave_ack`` the room is left anyway (the
        ``leave`` frame is already queued). Raises :class:`ConnectionClosed`
        if the connection ends before the ``leave_ack``.
        """
        client = self._client
        if self is client:
            raise ValueError("the root room cannot be left; close the client instead")
        if self._state == "joined":
            client._check_open()
            # Synchronous from here to the wait: no cancellation can split
            # "frame queued" from "room marked as leaving".
            client._send_control(
                encode(self.name, "leave", client._id, client._id, client._id.encode())
            )
            client._leaving[self.name].append(self)
            if client._rooms.get(self.name) is self:
                del client._rooms[self.name]
            self._state = "leaving"
            self._queue_send.close()
            self._notify_members()
        elif self._state != "leaving":
            await trio.lowlevel.checkpoint()
            if self._state == "closed":
                raise client._closed_error()
            return
        await self._left.wait()
        if self._state != "left":
            raise client._closed_error()

    # -- called by the client's reader --------------------------------------

    def _set_members(self, ids: list[str]) -> None:
        self._members = list(dict.fromkeys(ids))
        self._notify_members()

    def _member_notice(self, event: str, member: str) -> None:
        if event == "new_member":
            if member not in self._members:
                self._members.append(member)
        elif member in self._members:
            self._members.remove(member)
        self._notify_members()

    def _notify_members(self) -> None:
        changed = self._members_changed
        self._members_changed = trio.Event()
        changed.set()

    def _end(self, error: ConnectionClosed | None) -> None:
        """The connection ended: wake every waiter of this room."""
        if self._state != "left":
            self._state = "closed"
        self._error = error
        self._queue_send.close()
        self._settled.set()
        self._left.set()
        self._notify_members()

    def _raise_not_joined(self) -> NoReturn:
        if self._state == "closed":
            raise self._client._closed_error()
        raise RuntimeError(f"room {self.name!r} was left; join it again first")


class Client(Room):
    """A connection to a wsrooms server, and its ``root`` room.

    Made by :func:`connect`. As a :class:`Room` it is ``root``: iterate over it
    for events sent on ``root``, including server-originated direct messages.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        queue_size: int = 256,
        max_message_size: int = 1 << 20,
        close_timeout: float = 5.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        super().__init__(None, ROOT, queue_size)
        self.url = url
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
        self._ssl_context = ssl_context
        self._queue_size = queue_size
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._id = ""
        self._rooms: dict[str, Room] = {ROOT: self}
        self._leaving: defaultdict[str, deque[Room]] = defaultdict(deque)
        # Joins cancelled before their join_ack: room name -> how many.
        self._cancelled_joins: defaultdict[str, int] = defaultdict(int)
        # Outbound frames: (frame, is_data). Control frames (join, leave) never
        # wait; data frames take a credit, so at most queue_size of them wait.
        self._out_send, self._out = trio.open_memory_channel[tuple[bytes, bool]](math.inf)
        self._credit, self._credit_return = trio.open_memory_channel[None](queue_size)
        self._calls_send, self._calls = trio.open_memory_channel[tuple[MessageHandler, Message]](
            queue_size
        )
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._background: trio.CancelScope | None = None
        self._closing = False
        self._finished = trio.Event()
        self._writer_done = trio.Event()
        self._close: ConnectionClosed | None = None

    def __repr__(self) -> str:
        return f"<Client {self._id or '(connecting)'} {self.url}>"

    @property
    def rooms(self) -> dict[str, Room]:
        """The rooms joined now, by name (``root`` included)."""
        return {name: room for name, room in self._rooms.items() if room._state == "joined"}

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection ended (``None`` while it is open)."""
        return self._close

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection ends; return why (it does not raise)."""
        await self._finished.wait()
        assert self._close is not None
        return self._close._copy()

    async def join(self, name: str) -> Room:
        """Join a room; returns its :class:`Room` once ``join_ack`` arrived.

        Joining a room already joined returns the same object at once. A
        server that refuses a join (``authorize_join``, limits) sends no
        answer, so bound the wait: ``with trio.fail_after(5): await join(...)``.

        Cancellation: if the call is cancelled before ``join_ack``, the client
        forgets the room and, when the late ``join_ack`` arrives, sends
        ``leave`` for it, so the server ends up without the membership too.
        If the ``join_ack`` was already handled when the cancellation is
        delivered, the room stays joined (see :attr:`rooms`).

        Raises ``ValueError`` for an empty name, :class:`ConnectionClosed` if
        the connection ends first.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("room name must be a non-empty string")
        self._check_open()
        room = self._rooms.get(name)
        if room is None:
            room = Room(self, name, self._queue_size)
            # Synchronous from here to the wait (see leave()).
            self._send_control(encode(name, "join", "", "", b""))
            self._rooms[name] = room
            # A late join_ack of an earlier cancelled join now answers this one.
            self._cancelled_joins.pop(name, None)
        elif room._state == "joined":
            await trio.lowlevel.checkpoint()
            return room
        room._waiters += 1
        try:
            await room._settled.wait()
        finally:
            room._waiters -= 1
            if room._state == "joining" and room._waiters == 0 and self._rooms.get(name) is room:
                # Every caller gave up before join_ack: forget the room; the
                # reader answers its join_ack with a leave.
                del self._rooms[name]
                room._state = "closed"
                room._queue_send.close()
                self._cancelled_joins[name] += 1
        if room._state != "joined":
            raise self._closed_error()
        return room

    async def aclose(self) -> None:
        """Close the connection: frames already sent go out first, then close 1000.

        Waits for the server's close frame at most ``close_timeout`` seconds.
        Idempotent. Leaving the ``async with connect(...)`` block calls it.
        """
        if not self._closing:
            self._closing = True
            self._out_send.close()  # the writer drains the queue, then closes
        with trio.move_on_after(self._close_timeout):
            await self._writer_done.wait()
        self._finish(None)
        if self._background is not None:
            self._background.cancel()

    async def leave(self) -> None:
        """Not possible for ``root``: raises ``ValueError``."""
        await Room.leave(self)

    # -- internals ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._finished.is_set():
            raise self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        if self._close is not None:
            return self._close._copy()
        if self._closing:
            return ConnectionClosed(1000, "", local=True)
        ws = self._ws
        reason = ws.closed if ws is not None else None
        if reason is not None:
            return ConnectionClosed(reason.code, reason.reason or "")
        return ConnectionClosed(_ABNORMAL)

    def _send_control(self, frame: bytes) -> None:
        try:
            self._out_send.send_nowait((frame, False))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None

    async def _send_data(self, frame: bytes) -> None:
        try:
            await self._credit.send(None)
            # No checkpoint between taking the credit and queueing the frame.
            self._out_send.send_nowait((frame, True))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None

    def _finish(self, error: ConnectionClosed | None) -> None:
        """The connection ended (``error`` is ``None`` for a local close)."""
        if self._finished.is_set():
            return
        self._close = error or ConnectionClosed(1000, "", local=True)
        rooms = list(self._rooms.values())
        for queue in self._leaving.values():
            rooms.extend(queue)
        self._leaving.clear()
        for room in rooms:
            room._end(error)
        self._out_send.close()
        self._credit_return.close()
        self._calls_send.close()
        self._finished.set()

    async def _run(
        self, stream: trio.abc.Stream | None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        ws: trio_websocket.WebSocketConnection | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._background = nursery.cancel_scope
                host, resource = _host_and_resource(self.url, self._ssl_context, stream)
                if stream is None:
                    stream = await _open_stream(self.url, self._ssl_context)
                watched = _WatchedStream(stream)
                async with trio.open_nursery() as handshake:
                    # trio-websocket waits forever for a 101 that cannot come
                    # once the server closed the connection: watch for that.
                    handshake.start_soon(watched.raise_on_eof)
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        watched,  # type: ignore[arg-type]  # any trio stream works
                        host,
                        resource,
                        extra_headers=self._headers,
                        message_queue_size=16,
                        max_message_size=self._max_message_size,
                    )
                    handshake.cancel_scope.cancel()
                self._ws = ws
                nursery.start_soon(self._reader, ws)
                nursery.start_soon(self._writer, ws)
                nursery.start_soon(self._dispatcher)
                # The first frame is the root join_ack: it gives us our ID.
                await self._settled.wait()
                if self._state != "joined":
                    raise self._closed_error()
                task_status.started()
        finally:
            self._finish(None)
            with trio.CancelScope(shield=True):
                if ws is not None:
                    await trio.aclose_forcefully(ws)
                # trio-websocket leaves the stream open after a closing
                # handshake the server started: the client owns it.
                if stream is not None:
                    await trio.aclose_forcefully(stream)

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if self._closing:
                    self._finish(None)
                else:
                    reason = exc.reason
                    code = reason.code if reason is not None else _ABNORMAL
                    text = (reason.reason or "") if reason is not None else ""
                    self._finish(ConnectionClosed(code, text))
                return
            if isinstance(data, str):
                data = data.encode()
            try:
                msg = Message.decode(data)
            except FrameError as exc:
                logger.warning("dropped a frame from the server: %s", exc)
                continue
            await self._dispatch(msg)

    async def _dispatch(self, msg: Message) -> None:
        event = msg.event
        if event == "join_ack":
            self._on_join_ack(msg)
            return
        if event == "leave_ack":
            self._on_leave_ack(msg.room)
            return
        room = self._rooms.get(msg.room)
        if room is None or room._state != "joined":
            logger.debug("dropped %r for room %r: not joined", event, msg.room)
            return
        if event in _NOTICES:
            try:
                room._member_notice(event, msg.text)
            except UnicodeDecodeError:
                logger.warning("dropped %r with a non-UTF-8 member ID", event)
                return
        handler = room._handlers.get(event)
        if handler is not None:
            try:
                await self._calls_send.send((handler, msg))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        elif event not in _NOTICES:
            try:
                await room._queue_send.send(msg)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the room was left while the queue was full

    def _on_leave_ack(self, name: str) -> None:
        # leave_acks answer our leaves in order; one with no leave pending
        # means the server removed us (Server.close_room).
        queue = self._leaving.get(name)
        if queue:
            room = queue.popleft()
            if not queue:
                del self._leaving[name]
        else:
            joined = self._rooms.get(name)
            if joined is None or joined._state != "joined" or joined is self:
                return
            logger.debug("removed from room %r by the server", name)
            del self._rooms[name]
            joined._queue_send.close()
            joined._notify_members()
            room = joined
        room._state = "left"
        room._left.set()

    def _on_join_ack(self, msg: Message) -> None:
        name = msg.room
        if not self._id:
            self._id = msg.src
        try:
            ids = json.loads(msg.payload)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("not a list of strings")
        except ValueError as exc:
            logger.warning("join_ack of %r has a bad member list: %s", name, exc)
            ids = [msg.src]
        room = self._rooms.get(name)
        if room is not None:
            room._set_members(ids)
            if room._state == "joining":
                room._state = "joined"
                room._settled.set()
            return
        if self._cancelled_joins.get(name):
            self._cancelled_joins[name] -= 1
            if not self._cancelled_joins[name]:
                del self._cancelled_joins[name]
            logger.debug("join of %r was cancelled: leaving it", name)
            try:
                self._send_control(encode(name, "leave", self._id, self._id, self._id.encode()))
            except ConnectionClosed:
                pass

    async def _writer(self, ws: trio_websocket.WebSocketConnection) -> None:
        try:
            async for frame, is_data in self._out:
                try:
                    await ws.send_message(frame)
                except trio_websocket.ConnectionClosed:
                    break
                if is_data:
                    try:
                        self._credit_return.receive_nowait()
                    except (trio.WouldBlock, trio.ClosedResourceError):
                        pass
            else:
                # aclose(): everything queued is written; now the closing handshake.
                await ws.aclose(1000)
        finally:
            self._out.close()
            self._credit_return.close()
            self._writer_done.set()

    async def _dispatcher(self) -> None:
        async for handler, msg in self._calls:
            await handler(msg)


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
        raise ConnectionClosed(_ABNORMAL, "connection closed before the WebSocket handshake")


def _host_and_resource(
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


async def _open_stream(url: str, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    parts = urlsplit(url)
    host = parts.hostname
    assert host is not None
    if parts.scheme == "wss":
        context = ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(
            host, parts.port or 443, ssl_context=context, https_compatible=True
        )
    return await trio.open_tcp_stream(host, parts.port or 80)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error in a nursery's exception group, ignoring ``Cancelled``."""
    real = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    return real[0] if len(real) == 1 else None


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` without replacing its ``__context__`` by the group."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@asynccontextmanager
async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    stream: trio.abc.Stream | None = None,
    queue_size: int = 256,
    max_message_size: int = 1 << 20,
    close_timeout: float = 5.0,
) -> AsyncIterator[Client]:
    """Connect to a wsrooms server; yields the :class:`Client` (the ``root`` room).

    Returns from ``async with`` once the root ``join_ack`` arrived, so
    ``client.id`` is known. Leaving the block closes cleanly (see
    :meth:`Client.aclose`).

    Args:
        url: ``ws://host:port/path?query`` or ``wss://...``. Browsers
            authenticate with the query string or cookies, so can you.
        headers: Extra HTTP headers for the upgrade (``Cookie``, ``Origin``,
            ``Authorization``).
        ssl_context: For ``wss://`` URLs (default: the system's trust store).
        stream: Talk over this already connected trio stream instead of
            opening a TCP connection (``url`` then only gives the ``Host``
            header and the path); :mod:`trioroom.testing` uses it. The
            client closes it when the connection ends.
        queue_size: Bound of each room's unread messages, of pending handler
            calls and of outbound data frames (see the module docstring).
        max_message_size: Larger messages from the server close the
            connection with 1009.
        close_timeout: How long closing waits for the server's close frame.

    Raises:
        ConnectionRejected: The server answered the upgrade with an HTTP error.
        ConnectionClosed: The connection closed before the root ``join_ack``.
        OSError: The TCP connection failed (``ssl.SSLError`` for TLS errors).
        ValueError: ``url`` is not a ``ws://`` or ``wss://`` URL.
    """
    client = Client(
        url,
        headers=headers,
        ssl_context=ssl_context,
        queue_size=queue_size,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run, stream)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        error = _single_error(group)
        if error is None:
            raise
        if isinstance(error, trio_websocket.ConnectionRejected):
            raise ConnectionRejected(error.status_code, error.body or b"") from None
        if isinstance(error, trio_websocket.HandshakeError):
            raise ConnectionClosed(_ABNORMAL, str(error)) from error
        _reraise(error)
