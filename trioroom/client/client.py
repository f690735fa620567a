"""A Trio client for trioroom (and any server speaking the wsrooms protocol).

Built on trio-websocket's client::

    async with trioroom.connect("ws://127.0.0.1:8080/ws") as root:
        lobby = await root.join("lobby")          # returns once join_ack arrived
        await lobby.send("chat", "hello")         # broadcast to the other members
        async for msg in lobby:                   # custom events of that room
            print(msg.src, msg.event, msg.text)

``connect`` yields a :class:`Client`, which is also the :class:`Room` object of
``root`` (the room every connection is in). See ``docs/client.md``.

With ``extension=True`` the client offers trioroom's ``trioroom.v1``
subprotocol (``docs/protocol.md``). When the server selects it, the client
counts and acknowledges the server's frames, resumes the session after a
dropped connection (same ID, rooms and member lists, no message lost or
repeated), gets answers to :meth:`Room.request`, and hears about refused
joins and other errors. Servers that do not select it are spoken to in the
plain protocol.

How it runs: inside the ``async with`` a small nursery runs a **dispatcher**
that runs the handlers registered with :meth:`Room.on`, one at a time, in
arrival order, and, for each WebSocket in turn (one, unless sessions are
resumed), trio-websocket's reader, a **reader** that decodes frames and
routes them by their room field, and a **writer** that owns every write to
the socket (so a cancelled ``send`` never leaves half a frame).

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
import random
import ssl
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar, cast, overload
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
import trio_websocket

from ..codes import RESUMABLE_CLOSE_CODES, ROOT, CloseCode
from ..exceptions import (
    ClientError,
    ConnectionClosed,
    ConnectionRejected,
    RequestFailed,
    ServerError,
)
from ..extension import (
    ACK,
    ERROR,
    NOT_RESUMED,
    REPLY,
    RESUMED,
    SESSION,
    SUBPROTOCOL,
    UNNUMBERED,
    request_ref,
)
from ..protocol import RESERVED_EVENTS, FrameError, Message, encode

__all__ = [
    "RESUMABLE_CLOSE_CODES",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "ConnectionRejected",
    "ErrorHandler",
    "MessageHandler",
    "RequestFailed",
    "Room",
    "ServerError",
    "SessionLost",
    "SessionLostHandler",
    "connect",
]

logger = logging.getLogger("trioroom.client")

#: ``async handler(msg)``, registered with :meth:`Room.on`.
MessageHandler = Callable[[Message], Awaitable[Any]]
#: ``async handler(error)``, registered with :meth:`Client.on_error`.
ErrorHandler = Callable[["ServerError"], Awaitable[Any]]
#: ``async handler(lost)``, registered with :meth:`Client.on_session_lost`.
SessionLostHandler = Callable[["SessionLost"], Awaitable[Any]]
H = TypeVar("H", bound=MessageHandler)
EH = TypeVar("EH", bound=ErrorHandler)
SH = TypeVar("SH", bound=SessionLostHandler)
T = TypeVar("T")
_NOTICES = frozenset({"new_member", "member_left"})
_HANDLEABLE_RESERVED = _NOTICES
#: Events of the extension start with this: never sent as custom events
#: (a trioroom server drops them as malformed).
_EXTENSION_PREFIX = "trioroom."
#: Delays between resume attempts: the first attempt is immediate, then
#: 0.1 s, 0.2 s, 0.4 s ... at most 2 s (each +-20% at random).
_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0


@attrs.frozen
class SessionLost:
    """The session could not be resumed: the client now has a new one.

    Given to the handler registered with :meth:`Client.on_session_lost`.
    Messages sent to the old session while the client was away are lost,
    and the other members saw ``old_id`` leave and ``new_id`` join.

    Attributes:
        reason: The server's reason: ``expired`` (the resume window passed),
            ``buffer_overflow``, ``unknown_token`` (for example the server
            restarted), ``identity_mismatch``, ``closed``,
            ``server_shutdown``, ``bad_request``.
        old_id: The connection ID of the lost session.
        new_id: The new connection ID (now :attr:`Room.id`).
        rooms: The rooms the client is joining again (besides ``root``).
            One the server refuses ends like a room closed by the server
            and is reported to :meth:`Client.on_error` as ``join_refused``.
    """

    reason: str
    old_id: str
    new_id: str
    rooms: tuple[str, ...]


class _Pending:
    """A frame sent with ``src="?<ref>"`` whose answer has not come yet."""

    __slots__ = ("done", "event", "frame", "kind", "ref", "result", "room", "seq", "written")

    def __init__(self, kind: str, seq: int, frame: bytes, room: Room, event: str) -> None:
        #: "request", "join", "rejoin", "leave" or "probe".
        self.kind = kind
        self.seq = seq
        self.ref = str(seq)
        self.frame = frame
        self.room = room
        self.event = event
        #: Generation of the socket it was written to (None: not written yet).
        self.written: int | None = None
        self.done = trio.Event()
        self.result: bytes | ClientError | None = None


class _Out:
    """A frame for the writer; an empty frame stands for an acknowledgement."""

    __slots__ = ("data", "frame", "ref")

    def __init__(self, frame: bytes, *, data: bool = False, ref: str | None = None) -> None:
        self.frame = frame
        self.data = data  # took a credit (see Client._send_data)
        self.ref = ref


class _AttemptFailed(Exception):
    """A resume attempt failed in a way worth trying again."""


class _CannotResume(Exception):
    """A resume attempt failed in a way that trying again cannot fix."""


def _payload(event: str, payload: bytes | str) -> bytes:
    if not isinstance(event, str) or not event:
        raise ValueError("event name must be a non-empty string")
    if event in RESERVED_EVENTS or event.startswith(_EXTENSION_PREFIX):
        raise ValueError(f"event {event!r} is reserved by the protocol; pick another name")
    return payload.encode() if isinstance(payload, str) else bytes(payload)


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
    :attr:`joined` is false. A resumed session keeps the room and its
    iteration going.
    """

    def __init__(self, client: Client | None, name: str, queue_size: int) -> None:
        self._client: Client = client if client is not None else cast("Client", self)
        self.name = name
        # joining -> joined -> leaving -> left; "closed" once the connection ended.
        self._state = "joining"
        # A dict as an ordered set: each notice is O(1), and join order is kept.
        self._members: dict[str, None] = {}
        self._queue_send, self._queue = trio.open_memory_channel[Message](queue_size)
        self._handlers: dict[str, MessageHandler] = {}
        self._settled = trio.Event()  # join_ack arrived, or the connection ended
        self._left = trio.Event()  # leave_ack arrived, or the connection ended
        self._members_changed = trio.Event()
        self._waiters = 0
        self._error: ConnectionClosed | None = None
        # Extended connections: the ref of the latest join, and the refusal.
        self._join_ref: str | None = None
        self._refusal: RequestFailed | None = None

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {self._state}>"

    @property
    def id(self) -> str:
        """This client's own connection ID (from the ``src`` of the root ``join_ack``).

        A new one after a :class:`SessionLost`.
        """
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
        data = _payload(event, payload)
        client = self._client
        client._check_open()
        if self._state != "joined":
            self._raise_not_joined()
        await client._send_data(
            _Out(encode(self.name, event, dst or "", client._id, data), data=True)
        )

    async def request(
        self,
        event: str,
        payload: bytes | str = b"",
        *,
        dst: str | None = None,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - a request's own deadline
    ) -> bytes:
        """Send ``event`` like :meth:`send` and wait for the server's answer.

        Needs an extended connection (``connect(..., extension=True)`` to a
        trioroom server). The server answers once it handled the frame: with
        the return value of its handler for ``event`` (bytes as is, ``str``
        UTF-8 encoded, ``None`` empty, anything else JSON), or with an empty
        payload for a broadcast or a direct message (``dst``) that was
        delivered. Returns that payload.

        Raises :class:`RequestFailed` when the server answers with an error
        (``code`` from ``trioroom.RequestError(message, code)``,
        ``handler_error``, ``timeout`` for the server's ``request_timeout``,
        ``not_a_member``, ``unknown_destination``...), with code ``timeout``
        when no answer came within ``timeout`` seconds (``None``: wait as long
        as it takes), and with code ``session_lost`` when the session it went
        out on was lost. Also raises like :meth:`send`, ``RuntimeError`` on a
        plain connection, and :class:`ConnectionClosed` if the connection
        ends first. An answer that arrives after the timeout is dropped.
        """
        data = _payload(event, payload)
        client = self._client
        client._check_open()
        if not client.extended:
            raise RuntimeError(
                "requests need the trioroom.v1 extension: connect(..., extension=True)"
                " to a trioroom server"
            )
        if self._state != "joined":
            self._raise_not_joined()
        pending = client._new_pending("request", self, event, dst=dst or "", payload=data)
        try:
            await client._send_data(_Out(pending.frame, data=True, ref=pending.ref))
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await pending.done.wait()
        finally:
            if client._pending.get(pending.ref) is pending:
                del client._pending[pending.ref]
        result = pending.result
        if not pending.done.is_set():
            raise RequestFailed(
                "timeout", f"no answer within {timeout:g}s", event=event, room=self.name
            )
        if isinstance(result, ConnectionClosed):
            raise client._closed_error()
        if isinstance(result, ClientError):
            raise result
        assert isinstance(result, bytes)
        return result

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
                raise self._error.copy() from None
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
            own = client._id
            if client.extended:
                pending = client._new_pending("leave", self, "leave", dst=own, payload=own.encode())
                client._send_control(_Out(pending.frame, ref=pending.ref))
            else:
                client._send_control(_Out(encode(self.name, "leave", own, own, own.encode())))
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
        self._members = dict.fromkeys(ids)
        self._notify_members()

    def _member_notice(self, event: str, member: str) -> None:
        if event == "new_member":
            self._members.setdefault(member)  # a repeated notice keeps the first place
        else:
            self._members.pop(member, None)
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

    def _removed(self, refusal: RequestFailed | None = None) -> None:
        """The server refused the join, or removed us: the room ends like one left."""
        self._state = "left"
        self._refusal = refusal
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
        extension: bool = False,
        resume: bool = True,
        resume_timeout: float | None = None,
        handshake_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        ack_every: int = 64,
        ack_interval: float = 5.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if ack_every < 1:
            raise ValueError("ack_every must be at least 1")
        for option, value in (
            ("handshake_timeout", handshake_timeout),
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("ack_interval", ack_interval),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{option} must be positive")
        if resume_timeout is not None and resume_timeout < 0:
            raise ValueError("resume_timeout must not be negative")
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
        # Outbound frames. Control frames (join, leave, acks) never wait; data
        # frames take a credit, so at most queue_size of them wait.
        self._out_send, self._out = trio.open_memory_channel[_Out](math.inf)
        self._credit, self._credit_return = trio.open_memory_channel[None](queue_size)
        self._calls_send, self._calls = trio.open_memory_channel[
            tuple[Callable[[Any], Awaitable[Any]], Any]
        ](queue_size)
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._background: trio.CancelScope | None = None
        self._closing = False
        self._finished = trio.Event()
        self._writer_done = trio.Event()
        self._close: ConnectionClosed | None = None
        # Reader stalls on a full queue (the heartbeat does not blame the network).
        self._stalls = 0
        self._stalling = 0
        # -- the trioroom.v1 extension --
        #: ``True`` when the server selected the ``trioroom.v1`` subprotocol.
        self.extended = False
        #: How many times the session was resumed after a dropped connection.
        self.resumes = 0
        #: Every :class:`SessionLost` so far, oldest first.
        self.session_losses: list[SessionLost] = []
        self._extension = extension
        self._resume = resume
        self._resume_timeout = resume_timeout
        self._handshake_timeout = handshake_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ack_every = ack_every
        self._ack_interval = ack_interval
        self._can_reconnect = True
        self._token: str | None = None
        self._resume_window = 0.0
        self._received = 0  # numbered frames received on the session
        self._acked = 0
        self._ack_queued = False
        self._seq = 0
        self._pending: dict[str, _Pending] = {}
        self._generation = 0  # of the current socket
        # Frames for the next socket before the queue (not written on the last one).
        self._carry: deque[_Out] = deque()
        self._socket_up = False
        self._error_handler: ErrorHandler | None = None
        self._session_lost_handler: SessionLostHandler | None = None

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

    @property
    def connected(self) -> bool:
        """``False`` while a dropped connection is being resumed, and once closed."""
        return self._socket_up and not self._finished.is_set()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection ends; return why (it does not raise)."""
        await self._finished.wait()
        assert self._close is not None
        return self._close.copy()

    def on_error(self, handler: EH) -> EH:
        """Register ``async handler(error)`` for errors that answer no request.

        ``error`` is a :class:`ServerError` (``rate_limited``, ``malformed``,
        ``message_too_big``, ``not_a_member`` and ``unknown_destination`` of
        a plain :meth:`Room.send`, a room refused after a lost session...).
        Use as ``client.on_error(fn)`` or as a decorator. It runs in the
        dispatcher like the handlers of :meth:`Room.on`. Without a handler
        such errors are logged (``trioroom.client`` logger, warning).
        """
        self._error_handler = handler
        return handler

    def on_session_lost(self, handler: SH) -> SH:
        """Register ``async handler(lost)``, called when a session could not be resumed.

        ``lost`` is a :class:`SessionLost`. When it runs, the client already
        has its new ID and its joins of ``lost.rooms`` are on their way (they
        go out before anything the handler sends). Use as a decorator too.
        Without a handler the event is logged; :attr:`session_losses` keeps
        them all anyway.
        """
        self._session_lost_handler = handler
        return handler

    async def join(self, name: str) -> Room:
        """Join a room; returns its :class:`Room` once ``join_ack`` arrived.

        Joining a room already joined returns the same object at once.

        A server refusing a join (``authorize_join``, limits) tells an
        extended client: ``join`` raises :class:`RequestFailed` with code
        ``join_refused``. On a plain connection it sends no answer, so bound
        the wait: ``with trio.fail_after(5): await join(...)``.

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
            if self.extended:
                pending = self._new_pending("join", room, "join")
                room._join_ref = pending.ref
                self._send_control(_Out(pending.frame, ref=pending.ref))
            else:
                self._send_control(_Out(encode(name, "join", "", "", b"")))
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
                # reader answers its join_ack (extended: its reply) with a leave.
                del self._rooms[name]
                room._state = "closed"
                room._queue_send.close()
                self._cancelled_joins[name] += 1
        if room._refusal is not None:
            raise room._refusal.copy()
        if room._state != "joined":
            raise self._closed_error()
        return room

    async def aclose(self) -> None:
        """Close the connection: frames already sent go out first, then close 1000.

        Waits for the server's close frame at most ``close_timeout`` seconds.
        Idempotent. Leaving the ``async with connect(...)`` block calls it.
        Closing while a dropped connection is being resumed stops the resume
        and drops the frames still queued.
        """
        if not self._closing:
            self._closing = True
            self._out_send.close()  # the writer drains the queue, then closes
            if not self._socket_up:
                self._writer_done.set()  # no writer: nothing can be drained
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
            return self._close.copy()
        if self._closing:
            return ConnectionClosed(1000, "", local=True)
        ws = self._ws
        reason = ws.closed if ws is not None else None
        if reason is not None:
            return ConnectionClosed(reason.code, reason.reason or "")
        return ConnectionClosed(CloseCode.ABNORMAL_CLOSURE)

    def _new_pending(
        self, kind: str, room: Room, event: str, *, dst: str = "", payload: bytes = b""
    ) -> _Pending:
        """Register a frame that asks for an answer (``src="?<ref>"``)."""
        self._seq += 1
        name = "" if kind == "probe" else room.name
        frame = encode(name, event, dst, f"?{self._seq}", payload)
        pending = _Pending(kind, self._seq, frame, room, event)
        self._pending[pending.ref] = pending
        return pending

    def _send_control(self, item: _Out) -> None:
        try:
            self._out_send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None

    async def _send_data(self, item: _Out) -> None:
        try:
            await self._credit.send(None)
            # No checkpoint between taking the credit and queueing the frame.
            self._out_send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None

    def _return_credit(self) -> None:
        try:
            self._credit_return.receive_nowait()
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

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
        for pending in self._pending.values():
            pending.result = self._close
            pending.done.set()
        self._pending.clear()
        self._out_send.close()
        self._credit_return.close()
        self._calls_send.close()
        self._finished.set()

    # -- sockets --------------------------------------------------------------

    async def _run(
        self, stream: trio.abc.Stream | None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        # A stream handed to us cannot be opened again: no resumption then.
        self._can_reconnect = stream is None
        try:
            async with trio.open_nursery() as nursery:
                self._background = nursery.cancel_scope
                nursery.start_soon(self._dispatcher)
                error = await self._serve_socket(stream, ready=task_status.started)
                while error is not None and self._resumable(error):
                    error, given_up = await self._resume_session(error)
                    if given_up:
                        break
                self._finish(error)
                nursery.cancel_scope.cancel()
        finally:
            self._finish(None)

    def _resumable(self, error: ConnectionClosed) -> bool:
        return (
            self._resume
            and self._can_reconnect
            and self.extended
            and self._token is not None
            and not self._closing
            and error.code in RESUMABLE_CLOSE_CODES
        )

    async def _resume_session(
        self, cause: ConnectionClosed
    ) -> tuple[ConnectionClosed | None, bool]:
        """Reconnect with the resume token until a socket is up or time is over.

        Returns how the next socket ended (``None``: closed by us) and
        ``False``, or why the session could not be taken up again and
        ``True``.
        """
        window = self._resume_timeout if self._resume_timeout is not None else self._resume_window
        deadline = trio.current_time() + window
        logger.info("%s: resuming the session", cause)
        attempt = 0
        while not self._closing:
            attempt += 1
            try:
                return await self._serve_socket(None), False
            except BaseExceptionGroup as group:
                error = _single_error(group)
                if error is None:
                    raise
            except Exception as exc:
                error = exc
            if isinstance(error, trio_websocket.ConnectionRejected):
                status = error.status_code
                problem = f"handshake rejected with HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    return ConnectionClosed(
                        CloseCode.ABNORMAL_CLOSURE, f"could not resume: {problem}"
                    ), True
            elif isinstance(error, _CannotResume):
                return ConnectionClosed(
                    CloseCode.ABNORMAL_CLOSURE, f"could not resume: {error}"
                ), True
            elif isinstance(
                error, OSError | ClientError | trio_websocket.HandshakeError | _AttemptFailed
            ):
                problem = str(error) or type(error).__name__
            else:
                _reraise(error)
            delay = min(_MAX_DELAY, _FIRST_DELAY * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if trio.current_time() + delay >= deadline:
                text = f"not resumed within {window:g}s ({attempt} attempts; last: {problem})"
                return ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, text), True
            logger.info("resume attempt %d failed (%s); next in %.2fs", attempt, problem, delay)
            await trio.sleep(delay)
        return None, True

    def _resume_url(self) -> str:
        """The URL with ``resume=<token>&last=<count>``; other parameters kept as they are."""
        assert self._token is not None
        parts = urlsplit(self.url)
        kept = [
            item
            for item in parts.query.split("&")
            if item and item.partition("=")[0] not in ("resume", "last")
        ]
        kept += [f"resume={self._token}", f"last={self._received}"]
        return urlunsplit(parts._replace(query="&".join(kept)))

    async def _serve_socket(
        self, stream: trio.abc.Stream | None, *, ready: Callable[[], object] | None = None
    ) -> ConnectionClosed | None:
        """Open one WebSocket and serve it until it ends; return why (``None``: we closed it).

        Without ``ready`` this is a resume attempt. Setting the socket up is
        bounded by ``handshake_timeout`` either way. Raises when the socket
        cannot be set up.
        """
        resuming = ready is None
        url = self._resume_url() if resuming else self.url
        ws: trio_websocket.WebSocketConnection | None = None
        outcome: ConnectionClosed | None = None
        heartbeat_failure: list[ConnectionClosed] = []
        old_id = self._id
        try:
            async with trio.open_nursery() as nursery:
                # The first connect too: a server that accepts the TCP
                # connection and never opens the session must not hang connect().
                deadline = trio.current_time() + self._handshake_timeout
                with trio.CancelScope(deadline=deadline) as setup:
                    host, resource = _host_and_resource(url, self._ssl_context, stream)
                    if stream is None:
                        stream = await _open_stream(url, self._ssl_context)
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
                            subprotocols=[SUBPROTOCOL] if self._extension else None,
                            extra_headers=self._headers,
                            message_queue_size=16,
                            max_message_size=self._max_message_size,
                        )
                        handshake.cancel_scope.cancel()
                    self._ws = ws
                    extended = ws.subprotocol == SUBPROTOCOL
                    if resuming and not extended:
                        raise _CannotResume("the server no longer selects trioroom.v1")
                    self.extended = extended
                    not_resumed = await self._read_opening(ws, resuming)
                if setup.cancelled_caught:
                    problem = f"no answer within {self._handshake_timeout:g}s (handshake_timeout)"
                    if resuming:
                        raise _AttemptFailed(problem)
                    raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, problem)
                assert ws is not None
                self._generation += 1
                preamble: list[_Out] = []
                probe: _Pending | None = None
                lost: SessionLost | None = None
                if not_resumed == "kicked":
                    # Removed by the server while away: do not come back as someone new.
                    self._id = old_id
                    with trio.move_on_after(self._close_timeout):
                        await ws.aclose(1000)
                    nursery.cancel_scope.cancel()
                    return ConnectionClosed(4000, "kicked while disconnected")
                if not_resumed is not None:
                    preamble, lost = self._restart_session(not_resumed, old_id)
                elif resuming:
                    self.resumes += 1
                    logger.info("session %s resumed", self._id)
                    probe = self._make_probe()
                self._socket_up = True
                nursery.start_soon(self._writer, ws, preamble, probe)
                if self.extended and self._ping_interval is not None:
                    nursery.start_soon(self._heartbeat, ws, nursery.cancel_scope, heartbeat_failure)
                if self._token is not None:
                    nursery.start_soon(self._ack_timer)
                if ready is not None:
                    ready()
                outcome = await self._reader(ws, lost)
                nursery.cancel_scope.cancel()
        finally:
            self._socket_up = False
            with trio.CancelScope(shield=True):
                if ws is not None:
                    await trio.aclose_forcefully(ws)
                # trio-websocket leaves the stream open after a closing
                # handshake the server started: the client owns it.
                if stream is not None:
                    await trio.aclose_forcefully(stream)
        if heartbeat_failure:
            return heartbeat_failure[0]
        return outcome

    async def _read_opening(
        self, ws: trio_websocket.WebSocketConnection, resuming: bool
    ) -> str | None:
        """Read the frames that open a socket: up to the root ``join_ack`` or ``trioroom.resumed``.

        Returns the reason of a ``trioroom.not_resumed`` (a new session
        followed), else ``None``.
        """
        not_resumed: str | None = None
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise _closed_by(exc.reason) from None
            msg = _decode(data)
            if msg is None:
                self._counted()
                continue
            event = msg.event
            if self.extended and event in UNNUMBERED:
                body = _json_object(msg.payload)
                if event == SESSION:
                    self._on_session(body)
                elif event == RESUMED and resuming and not_resumed is None:
                    return None
                elif event == NOT_RESUMED and resuming:
                    reason = body.get("reason")
                    not_resumed = reason if isinstance(reason, str) and reason else "unknown"
                    self._token = None
                    self._received = self._acked = 0
                else:
                    logger.warning("unexpected %s from the server: ignored", event)
                continue
            if event == "join_ack" and msg.room == ROOT:
                if resuming and not_resumed is None:
                    # Neither resumed nor not_resumed: a new session all the same.
                    not_resumed = "unknown"
                    self._received = self._acked = 0
                self._on_join_ack(msg)
                self._counted()
                return not_resumed
            await self._dispatch(msg)
            self._counted()

    def _on_session(self, body: dict[str, Any]) -> None:
        token = body.get("token")
        window = body.get("resume_window")
        if isinstance(token, str) and token and isinstance(window, int | float) and window > 0:
            self._token = token
            self._resume_window = float(window)
        else:
            logger.warning("trioroom.session without a usable token: no resumption")
            self._token = None

    def _restart_session(self, reason: str, old_id: str) -> tuple[list[_Out], SessionLost]:
        """The server could not resume the session and opened a new one: catch up.

        Calls whose frames went out on the old session get no answer any
        more. The rooms are joined again, before anything still queued goes
        out.
        """
        logger.warning("session %s not resumed (%s): now %s", old_id, reason, self._id)
        for ref, pending in list(self._pending.items()):
            if pending.written is None:
                continue  # still queued: it goes out on the new session
            del self._pending[ref]
            if pending.kind == "request":
                pending.result = RequestFailed(
                    "session_lost",
                    f"the session was lost ({reason}) before the answer came",
                    event=pending.event,
                    room=pending.room.name,
                )
                pending.done.set()
            elif pending.kind == "leave":
                # The old session's memberships are gone with it.
                self._complete_leave(pending.room)
            # Joins: joined again below (a cancelled one needs nothing: the
            # membership went with the session). Probes: not needed any more.
        preamble: list[_Out] = []
        names: list[str] = []
        for name, room in self._rooms.items():
            if room is self:
                continue
            if room._state == "joining":
                join = self._pending.get(room._join_ref or "")
                if join is not None and join.written is None:
                    continue  # its join is still queued
            elif room._state != "joined":
                continue
            pending = self._new_pending("rejoin", room, "join")
            room._join_ref = pending.ref
            preamble.append(_Out(pending.frame, ref=pending.ref))
            names.append(name)
        return preamble, SessionLost(reason, old_id, self._id, tuple(names))

    def _complete_leave(self, room: Room) -> None:
        queue = self._leaving.get(room.name)
        if queue is not None and room in queue:
            queue.remove(room)
            if not queue:
                del self._leaving[room.name]
        room._state = "left"
        room._left.set()

    def _make_probe(self) -> _Pending | None:
        """After a resume: a request that tells which tracked frames the server never got.

        Frames written on the lost socket may not have reached the server.
        The server answers in order, and everything it sent before the
        resume comes first, so once the probe (a leave of the room ``""``,
        which no client can be in) is answered, tracked frames still
        unanswered were never received: the writer sends them again, before
        anything newer. Untracked frames (``send``) are not sent again.
        """
        for ref, pending in list(self._pending.items()):
            if pending.kind == "probe":
                del self._pending[ref]
        if not any(pending.written is not None for pending in self._pending.values()):
            return None
        return self._new_pending("probe", self, "leave")

    async def _reader(
        self, ws: trio_websocket.WebSocketConnection, lost: SessionLost | None
    ) -> ConnectionClosed | None:
        if lost is not None:
            await self._session_lost(lost)
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if self._closing:
                    return None
                return _closed_by(exc.reason)
            msg = _decode(data)
            if msg is not None:
                if self.extended and msg.event in UNNUMBERED:
                    logger.warning("unexpected %s in the middle of a session: ignored", msg.event)
                    continue
                await self._dispatch(msg)
            # Counted once handled: a frame interrupted by the socket's end
            # is not counted, so the server replays it.
            self._counted()

    def _counted(self) -> None:
        """One more numbered frame received (extended connections)."""
        if not self.extended:
            return
        self._received += 1
        if (
            self._token is not None
            and not self._ack_queued
            and self._received - self._acked >= self._ack_every
        ):
            self._queue_ack()

    def _queue_ack(self) -> None:
        self._ack_queued = True
        try:
            self._out_send.send_nowait(_Out(b""))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _ack_timer(self) -> None:
        while True:
            await trio.sleep(self._ack_interval)
            if self._received > self._acked and not self._ack_queued:
                self._queue_ack()

    async def _heartbeat(
        self,
        ws: trio_websocket.WebSocketConnection,
        scope: trio.CancelScope,
        failure: list[ConnectionClosed],
    ) -> None:
        """Ping the server; a pong that does not come in time ends the socket (1006)."""
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            stalls = self._stalls
            with trio.move_on_after(self._ping_timeout) as wait:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            # While the reader waits for the application, pongs are not read:
            # that is the application's slowness, not the network's.
            if wait.cancelled_caught and not self._stalling and stalls == self._stalls:
                logger.info("no pong within %gs: the connection is lost", self._ping_timeout)
                failure.append(
                    ConnectionClosed(
                        CloseCode.ABNORMAL_CLOSURE, f"no pong within {self._ping_timeout:g}s"
                    )
                )
                scope.cancel()
                return

    async def _writer(
        self,
        ws: trio_websocket.WebSocketConnection,
        preamble: list[_Out],
        probe: _Pending | None,
    ) -> None:
        generation = self._generation
        todo = self._carry
        todo.extendleft(reversed(preamble))
        try:
            if probe is not None:
                if not await self._write(ws, _Out(probe.frame, ref=probe.ref), generation):
                    return
                with trio.move_on_after(self._handshake_timeout):
                    await probe.done.wait()
                missed = sorted(
                    (
                        pending
                        for pending in self._pending.values()
                        if pending.kind != "probe"
                        and pending.written is not None
                        and pending.written < generation
                    ),
                    key=lambda pending: pending.seq,
                )
                if missed:
                    logger.info("sending %d frames again: the server missed them", len(missed))
                for pending in missed:
                    pending.written = None  # queued again, first
                todo.extendleft(reversed([_Out(p.frame, ref=p.ref) for p in missed]))
            while True:
                if todo:
                    item = todo.popleft()
                else:
                    try:
                        item = await self._out.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
                if not await self._write(ws, item, generation):
                    if item.frame:
                        todo.appendleft(item)  # first on the next socket
                    return
            # aclose(): everything queued is written; now the closing handshake.
            await ws.aclose(1000)
        finally:
            if self._closing:
                self._writer_done.set()

    async def _write(
        self, ws: trio_websocket.WebSocketConnection, item: _Out, generation: int
    ) -> bool:
        """Write one frame; ``False`` if the socket is closed and it was not written."""
        frame = item.frame
        if not frame:
            self._ack_queued = False
            count = self._received
            if count <= self._acked or self._token is None:
                return True
            try:
                await ws.send_message(encode(ROOT, ACK, "", "", str(count).encode()))
            except trio_websocket.ConnectionClosed:
                return False
            self._acked = count
            return True
        pending = self._pending.get(item.ref) if item.ref is not None else None
        if pending is not None:
            pending.written = generation
        try:
            await ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            if pending is not None:
                pending.written = None
            return False
        except BaseException:
            # Cancelled during the write: the frame may have gone out, so it
            # is not written again (a tracked one is settled by the probe).
            if item.data:
                self._return_credit()
            raise
        if item.data:
            self._return_credit()
        return True

    # -- inbound frames ---------------------------------------------------------

    async def _put(self, channel: trio.MemorySendChannel[T], item: T) -> None:
        """Send to a bounded channel; a wait is counted as a stall of the reader."""
        try:
            channel.send_nowait(item)
            return
        except trio.WouldBlock:
            pass
        self._stalls += 1
        self._stalling += 1
        try:
            await channel.send(item)
        finally:
            self._stalling -= 1

    async def _call_soon(self, handler: Callable[[Any], Awaitable[Any]], arg: Any) -> None:
        try:
            await self._put(self._calls_send, (handler, arg))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _dispatch(self, msg: Message) -> None:
        event = msg.event
        if event == "join_ack":
            self._on_join_ack(msg)
            return
        if event == "leave_ack":
            self._on_leave_ack(msg.room)
            return
        if self.extended and not msg.src and event in (REPLY, ERROR):
            await self._on_answer(msg)
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
            await self._call_soon(handler, msg)
        elif event not in _NOTICES:
            try:
                await self._put(room._queue_send, msg)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the room was left while the queue was full

    async def _on_answer(self, msg: Message) -> None:
        """A ``trioroom.reply`` or ``trioroom.error``."""
        ref = request_ref(msg.dst)
        error = _error_of(msg) if msg.event == ERROR else None
        pending = self._pending.pop(ref, None) if ref is not None else None
        if pending is None:
            if error is not None and ref is None:
                await self._server_error(error)
            else:
                logger.debug("dropped the answer to %r: nobody waits for it", msg.dst)
            return
        kind = pending.kind
        if kind == "request":
            if error is None:
                pending.result = msg.payload
            else:
                pending.result = RequestFailed(
                    error.code, error.message, event=error.event or pending.event, room=msg.room
                )
        elif kind in ("join", "rejoin"):
            room = pending.room
            if error is not None:
                await self._join_refused(pending, error)
            elif room._state == "closed" and room.name not in self._rooms:
                # Every caller gave up before the join_ack: leave it again.
                self._leave_cancelled_join(room.name)
        pending.done.set()

    def _leave_cancelled_join(self, name: str) -> None:
        logger.debug("join of %r was cancelled: leaving it", name)
        own = self._id
        stand_in = Room(self, name, 1)  # its leave_ack pairs with this leave
        stand_in._state = "leaving"
        pending = self._new_pending("leave", stand_in, "leave", dst=own, payload=own.encode())
        try:
            self._send_control(_Out(pending.frame, ref=pending.ref))
        except ConnectionClosed:
            return
        self._leaving[name].append(stand_in)

    async def _join_refused(self, pending: _Pending, error: ServerError) -> None:
        room = pending.room
        name = room.name
        failure = RequestFailed(error.code, error.message, event="join", room=name)
        current = self._rooms.get(name) is room
        if current and room._state == "joining":
            del self._rooms[name]
            room._removed(failure)
        elif current and room._state == "joined" and pending.kind == "rejoin":
            # Not joined again after a lost session: the room ends.
            logger.warning("room %r not joined again after a lost session: %s", name, error)
            del self._rooms[name]
            room._removed()
            await self._server_error(error)

    async def _server_error(self, error: ServerError) -> None:
        handler = self._error_handler
        if handler is None:
            logger.warning("error from the server (room %r): %s", error.room, error)
            return
        await self._call_soon(handler, error)

    async def _session_lost(self, lost: SessionLost) -> None:
        self.session_losses.append(lost)
        handler = self._session_lost_handler
        if handler is None:
            logger.warning(
                "session lost (%s): %s is now %s; joining %d rooms again",
                lost.reason,
                lost.old_id,
                lost.new_id,
                len(lost.rooms),
            )
            return
        await self._call_soon(handler, lost)

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
        if name == ROOT or not self._id:
            self._id = msg.src  # a root join_ack opens a session
        try:
            ids = _loads(msg.payload)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("not a list of strings")
        except ValueError as exc:
            logger.warning(
                "join_ack of %r has a bad member list: %s", name, exc, extra={"room": name}
            )
            ids = [msg.src]
        room = self._rooms.get(name)
        if room is not None:
            room._set_members(ids)
            if room._state == "joining":
                room._state = "joined"
                room._settled.set()
            return
        if self.extended:
            return  # a cancelled join: its reply, which follows, decides (_on_answer)
        if self._cancelled_joins.get(name):
            self._cancelled_joins[name] -= 1
            if not self._cancelled_joins[name]:
                del self._cancelled_joins[name]
            logger.debug("join of %r was cancelled: leaving it", name)
            own = self._id
            try:
                self._send_control(_Out(encode(name, "leave", own, own, own.encode())))
            except ConnectionClosed:
                pass

    async def _dispatcher(self) -> None:
        async for handler, arg in self._calls:
            await handler(arg)


def _decode(data: bytes | str) -> Message | None:
    if isinstance(data, str):
        data = data.encode()
    try:
        return Message.decode(data)
    except FrameError as exc:
        logger.warning("dropped a frame from the server: %s", exc)
        return None


def _loads(payload: bytes) -> Any:
    """``json.loads`` that raises ``ValueError`` for every payload it cannot parse.

    A server can nest arrays deep enough to exhaust the parser's recursion
    limit: that is bad JSON like any other, not a reason to end the client.
    """
    try:
        return json.loads(payload)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        value = _loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


#: Bytes of an unparsable ``trioroom.error`` payload kept as its message.
_RAW_ERROR_LIMIT = 200


def _error_of(msg: Message) -> ServerError:
    """The :class:`ServerError` of a ``trioroom.error`` frame (never raises)."""
    body = _json_object(msg.payload)
    code = body.get("code")
    message = body.get("message")
    event = body.get("event")
    if not body:
        # Unparsable: show its start only, since it can be as large as a frame
        # may be and ends up in a log line when nobody handles errors.
        message = msg.payload[:_RAW_ERROR_LIMIT].decode(errors="replace")
        if len(msg.payload) > _RAW_ERROR_LIMIT:
            message += f"... ({len(msg.payload)} bytes)"
    return ServerError(
        code if isinstance(code, str) and code else "unknown",
        message if isinstance(message, str) else "",
        event=event if isinstance(event, str) else "",
        room=msg.room,
    )


def _closed_by(reason: Any) -> ConnectionClosed:
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
    extension: bool = False,
    resume: bool = True,
    resume_timeout: float | None = None,
    handshake_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 20.0,
    ack_every: int = 64,
    ack_interval: float = 5.0,
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
            client closes it when the connection ends. Such a client cannot
            reconnect, so it does not resume sessions.
        queue_size: Bound of each room's unread messages, of pending handler
            calls and of outbound data frames (see the module docstring).
        max_message_size: Larger messages from the server close the
            connection with 1009.
        close_timeout: How long closing waits for the server's close frame.
        extension: Offer the ``trioroom.v1`` subprotocol. If the server
            selects it (:attr:`Client.extended`), the session is resumed
            after a drop, :meth:`Room.request` works, refused joins raise
            and other errors reach :meth:`Client.on_error`. Otherwise, and
            with ``False``, the client speaks the plain protocol.
        resume: On an extended connection, resume the session when the
            connection drops (close codes in :data:`RESUMABLE_CLOSE_CODES`,
            or no pong to the client's ping).
        resume_timeout: How long after a drop the client starts new resume
            attempts (default: the ``resume_window`` the server announced).
        handshake_timeout: Bound of the connect and of each resume attempt:
            TCP connection, upgrade and the server's first frames, up to the
            root ``join_ack``. A first connect that takes longer raises
            :class:`ConnectionClosed` (1006).
        ping_interval: On an extended connection, ping the server this often;
            ``None`` for no pings.
        ping_timeout: A pong that takes longer means the connection is lost.
        ack_every: Acknowledge the server's frames after this many...
        ack_interval: ...and at least this often, in seconds, while some
            are unacknowledged (the server then frees its replay buffer).

    Raises:
        ConnectionRejected: The server answered the upgrade with an HTTP error.
        ConnectionClosed: The connection closed before the root ``join_ack``,
            or that did not arrive within ``handshake_timeout`` (code 1006).
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
        extension=extension,
        resume=resume,
        resume_timeout=resume_timeout,
        handshake_timeout=handshake_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        ack_every=ack_every,
        ack_interval=ack_interval,
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
            raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, str(error)) from error
        _reraise(error)
