"""What the hub asks the I/O layer to do.

The hub decides; it never writes, waits or calls application code. Each of
its methods returns a list of these effects, which the server performs in
order. They are plain slotted classes: one or two are made per inbound
message, on the hot path.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ..protocol import Message
from .rooms import Room

__all__ = ["Close", "Deliver", "Direct", "Effect", "Fanout", "Handle", "Join", "Leave"]

M = TypeVar("M")


class Deliver(Generic[M]):
    """Write ``frame`` (a WebSocket frame) to the local connection ``member``."""

    __slots__ = ("frame", "member")

    def __init__(self, member: M, frame: bytes) -> None:
        self.member = member
        self.frame = frame


class Fanout(Generic[M]):
    """Write ``frame`` to every local member of ``room`` but ``exclude``, and
    publish ``message`` (the frame's payload) to the room's members on other
    nodes. ``room`` is ``None`` when no member is local. ``count`` says
    whether it counts as a broadcast in the metrics (notices do not).
    """

    __slots__ = ("count", "exclude", "frame", "message", "name", "room")

    def __init__(
        self,
        name: str,
        room: Room[M] | None,
        message: bytes,
        frame: bytes,
        exclude: str,
        *,
        count: bool = True,
    ) -> None:
        self.name = name
        self.room = room
        self.message = message
        self.frame = frame
        self.exclude = exclude
        self.count = count


class Direct(Generic[M]):
    """A direct message: write ``frame`` to ``target`` when it is local, else
    publish ``message`` to the node that has connection ``dst``.

    The outcome goes back to :meth:`Hub.direct_done`, which answers the
    sender's request or reports the failure.
    """

    __slots__ = ("dst", "event", "frame", "message", "ref", "room", "sender", "target")

    def __init__(
        self,
        sender: M | None,
        target: M | None,
        dst: str,
        message: bytes,
        frame: bytes,
        room: str,
        event: str,
        ref: str | None,
    ) -> None:
        self.sender = sender
        self.target = target
        self.dst = dst
        self.message = message
        self.frame = frame
        self.room = room
        self.event = event
        self.ref = ref


class Join:
    """The client asked to join ``room``: run the join (it may wait on
    ``authorize_join`` and the backplane; see :meth:`Hub.join_refusal`)."""

    __slots__ = ("ref", "room")

    def __init__(self, room: str, ref: str | None) -> None:
        self.room = room
        self.ref = ref


class Leave:
    """The client asked to leave ``room``."""

    __slots__ = ("ref", "room")

    def __init__(self, room: str, ref: str | None) -> None:
        self.room = room
        self.ref = ref


class Handle:
    """Call the handler registered for ``message.event``; its result goes
    back to :meth:`Hub.handler_done`."""

    __slots__ = ("message", "ref")

    def __init__(self, message: Message, ref: str | None) -> None:
        self.message = message
        self.ref = ref


class Close(Generic[M]):
    """Close ``member``'s connection with ``code`` and ``reason``; ``why`` is
    the disconnect reason for metrics. ``graceful`` writes what is queued
    first."""

    __slots__ = ("code", "graceful", "member", "reason", "why")

    def __init__(self, member: M, code: int, reason: str, why: str, *, graceful: bool) -> None:
        self.member = member
        self.code = code
        self.reason = reason
        self.why = why
        self.graceful = graceful


Effect = Deliver[Any] | Fanout[Any] | Direct[Any] | Join | Leave | Handle | Close[Any]
