"""A room the client joined: the trio-facing side of a :class:`~.session.Membership`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, overload

import trio

from ..exceptions import ClientError, ConnectionClosed
from ..extension import EXTENSION_PREFIX
from ..protocol import RESERVED_EVENTS, Message
from .membership import Membership, State
from .outbox import Outbox
from .session import NOTICES, Session

__all__ = ["Inbox", "MessageHandler", "Room"]

#: ``async handler(msg)``, registered with :meth:`Room.on`.
MessageHandler = Callable[[Message], Awaitable[Any]]
H = TypeVar("H", bound=MessageHandler)


class Inbox:
    """Where a room's messages go (its handlers, else its queue), and its waiters' signal.

    The handle of the room's :class:`~.session.Membership`: the client's
    reader finds it there.
    """

    __slots__ = ("_changed", "handlers", "queue", "receive_channel", "room", "waiters")

    def __init__(self, room: Room, queue_size: int) -> None:
        self.room = room
        self.handlers: dict[str, MessageHandler] = {}
        self.queue, self.receive_channel = trio.open_memory_channel[Message](queue_size)
        #: Tasks waiting in :meth:`Client.join` for this room.
        self.waiters = 0
        self._changed = trio.Event()

    def wake(self) -> None:
        """Wake every task in :meth:`wait`."""
        changed = self._changed
        self._changed = trio.Event()
        changed.set()

    async def wait(self) -> None:
        """Wait for the room's next change (state or members)."""
        await self._changed.wait()

    async def wait_while(self, membership: Membership[Inbox], state: State) -> State:
        """Wait until ``membership`` (this inbox's) leaves ``state``; return the new one."""
        while membership.state is state:
            await self._changed.wait()
        return membership.state


def payload_of(event: str, payload: bytes | str) -> bytes:
    """The payload of a custom event, once ``event`` is known to be one."""
    if not isinstance(event, str) or not event:
        raise ValueError("event name must be a non-empty string")
    if event in RESERVED_EVENTS or event.startswith(EXTENSION_PREFIX):
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

    def __init__(
        self,
        session: Session[Inbox],
        outbox: Outbox,
        membership: Membership[Inbox],
        queue_size: int,
    ) -> None:
        self.name = membership.name
        self._session = session
        self._outbox = outbox
        self._membership = membership
        self._inbox = Inbox(self, queue_size)
        membership.attach(self._inbox, self._changed)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {self._membership.state}>"

    @property
    def id(self) -> str:
        """This client's own connection ID (from the ``src`` of the root ``join_ack``).

        A new one after a :class:`SessionLost`.
        """
        return self._session.id

    @property
    def joined(self) -> bool:
        """True while this client is a member of the room."""
        return self._membership.state is State.JOINED

    def members(self) -> list[str]:
        """A copy of the member IDs, this client included.

        Filled from ``join_ack`` and kept up to date by ``new_member`` and
        ``member_left``. On ``root`` the server may send a shortened list
        (``root_member_list_limit``) and no notices (``root_notices=False``).
        """
        return self._membership.members()

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
            if not self.joined:
                self._raise_not_joined()
            await self._inbox.wait()

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
        if event in RESERVED_EVENTS and event not in NOTICES:
            raise ValueError(f"event {event!r} is handled by the client itself")

        def register(fn: H) -> H:
            self._inbox.handlers[event] = fn
            return fn

        if handler is not None:
            return register(handler)
        return register

    def off(self, event: str) -> None:
        """Remove the handler of ``event``; later messages go to the iteration again."""
        self._inbox.handlers.pop(event, None)

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
        data = payload_of(event, payload)
        self._outbox.check_open()
        if not self.joined:
            self._raise_not_joined()
        await self._outbox.send_data(self._session.data(self.name, event, dst or "", data))

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
        data = payload_of(event, payload)
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be non-negative (or None)")
        session = self._session
        self._outbox.check_open()
        if not session.extended:
            raise RuntimeError(
                "requests need the trioroom.v1 extension: connect(..., extension=True)"
                " to a trioroom server"
            )
        if not self.joined:
            self._raise_not_joined()
        pending = session.request(self._membership, event, dst or "", data, timeout)
        answered = trio.Event()
        pending.watch(answered.set)
        try:
            await self._outbox.send_data(pending.outgoing(data=True))
            with trio.CancelScope(deadline=pending.start_clock(trio.current_time())):
                await answered.wait()
            if not pending.done:
                session.expire(trio.current_time())
        finally:
            session.forget(pending)
        result = pending.result
        if isinstance(result, ConnectionClosed):
            raise self._outbox.closed_error()
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
            return await self._inbox.receive_channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            error = self._membership.error
            if error is not None:
                raise error.copy() from None
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
        membership = self._membership
        if membership is self._session.root:
            raise ValueError("the root room cannot be left; close the client instead")
        if membership.state is State.JOINED:
            self._outbox.check_open()
            # Synchronous from here to the wait: no cancellation can split
            # "frame queued" from "room marked as leaving".
            self._outbox.send_control(self._session.leave(membership))
        elif membership.state is not State.LEAVING:
            await trio.lowlevel.checkpoint()
            if membership.state is State.CLOSED:
                raise self._outbox.closed_error()
            return
        if await self._inbox.wait_while(membership, State.LEAVING) is not State.LEFT:
            raise self._outbox.closed_error()

    def _changed(self) -> None:
        """The membership changed: wake the waiters; a room no longer open takes no messages."""
        if not self._membership.open:
            self._inbox.queue.close()
        self._inbox.wake()

    def _raise_not_joined(self) -> NoReturn:
        if self._membership.state is State.CLOSED:
            raise self._outbox.closed_error()
        raise RuntimeError(f"room {self.name!r} was left; join it again first")
