"""Frames the client sends, and those that wait for an answer (sans-I/O)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

from ..codes import ROOT
from ..exceptions import ClientError
from ..extension import ACK
from ..protocol import encode
from .membership import Membership

__all__ = ["Kind", "Outgoing", "Pending", "ack_frame"]


class Kind(enum.StrEnum):
    """What a :class:`Pending` frame is."""

    REQUEST = "request"
    JOIN = "join"
    REJOIN = "rejoin"  # a join sent again after a lost session
    LEAVE = "leave"
    PROBE = "probe"  # see Session.probe_answered


class Outgoing:
    """A frame for the writer; an empty frame stands for an acknowledgement.

    ``data`` frames (custom events) took a credit of the outbound queue, which
    the writer returns; ``ref`` names the :class:`Pending` the frame belongs to.
    """

    __slots__ = ("data", "frame", "ref")

    def __init__(self, frame: bytes, *, data: bool = False, ref: str | None = None) -> None:
        self.frame = frame
        self.data = data
        self.ref = ref

    def __repr__(self) -> str:
        return f"<Outgoing {self.frame[:40]!r} data={self.data} ref={self.ref}>"


def ack_frame(count: int) -> bytes:
    """The ``trioroom.ack`` frame that acknowledges ``count`` numbered frames."""
    return encode(ROOT, ACK, "", "", str(count).encode())


class Pending:
    """A frame sent with ``src="?<ref>"`` whose answer has not come yet."""

    __slots__ = (
        "_watchers",
        "deadline",
        "done",
        "event",
        "frame",
        "kind",
        "ref",
        "result",
        "room",
        "seq",
        "timeout",
        "written",
    )

    def __init__(
        self,
        kind: Kind,
        seq: int,
        frame: bytes,
        room: Membership[Any],
        event: str,
        timeout: float | None = None,
    ) -> None:
        self.kind = kind
        self.seq = seq
        self.ref = str(seq)
        self.frame = frame
        self.room = room
        self.event = event
        #: Requests: how long to wait for the answer once queued (``None``: no limit)...
        self.timeout = timeout
        #: ...and until when, once :meth:`start_clock` was called.
        self.deadline = math.inf
        #: Generation of the socket it was written to (``None``: not written yet).
        self.written: int | None = None
        self.done = False
        #: A request's answer (bytes) or failure; :class:`ConnectionClosed` for any kind.
        self.result: bytes | ClientError | None = None
        self._watchers: list[Callable[[], object]] = []

    def __repr__(self) -> str:
        return f"<Pending {self.kind} ?{self.ref} {self.event!r} done={self.done}>"

    def outgoing(self, *, data: bool = False) -> Outgoing:
        return Outgoing(self.frame, data=data, ref=self.ref)

    def start_clock(self, now: float) -> float:
        """The frame was queued at ``now``: return the deadline of its answer."""
        self.deadline = math.inf if self.timeout is None else now + self.timeout
        return self.deadline

    def watch(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the answer is in (at once if it already is)."""
        if self.done:
            callback()
        else:
            self._watchers.append(callback)

    def settle(self, result: bytes | ClientError | None) -> None:
        self.result = result
        self.done = True
        watchers, self._watchers = self._watchers, []
        for callback in watchers:
            callback()
