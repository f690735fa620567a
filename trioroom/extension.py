"""The ``trioroom.v1`` protocol extension, sans-I/O: its events and its replay buffer.

A client opts in by offering the WebSocket subprotocol ``trioroom.v1``. Plain
wsrooms clients never offer it and never see anything described here. The
extension reuses the five-field frame unchanged; see ``docs/protocol.md``.

* **Sessions**: before the ``root`` ``join_ack`` the server sends
  ``trioroom.session`` with a resume token. Every later frame the server sends
  on the session is numbered implicitly (1, 2, 3, ... in the order sent); the
  client acknowledges with ``trioroom.ack`` and resumes after a dropped socket
  by connecting with ``?resume=<token>&last=<n>``. The server then answers
  ``trioroom.resumed`` and replays frames ``n+1`` onwards, or
  ``trioroom.not_resumed`` with the reason, followed by a fresh session.
* **Requests**: a client frame whose ``src`` is ``?<ref>`` asks for a reply:
  ``trioroom.reply`` (``dst="?<ref>"``, payload = the handler's return value)
  or ``trioroom.error``.
* **Errors**: ``trioroom.error`` with a JSON payload
  ``{"code": ..., "message": ..., "event": ...}``.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import attrs

from .budget import Budget
from .codes import ROOT
from .protocol import encode

__all__ = [
    "ACK",
    "ERROR",
    "EXTENSION_PREFIX",
    "NOT_RESUMED",
    "REPLY",
    "RESUMED",
    "SESSION",
    "SUBPROTOCOL",
    "ReplayBuffer",
    "error_message",
    "reply_payload",
    "request_ref",
]

SUBPROTOCOL = "trioroom.v1"
#: Event names of the extension; clients may send only ``trioroom.ack``.
EXTENSION_PREFIX = "trioroom."

SESSION = "trioroom.session"
RESUMED = "trioroom.resumed"
NOT_RESUMED = "trioroom.not_resumed"
ACK = "trioroom.ack"
REPLY = "trioroom.reply"
ERROR = "trioroom.error"

#: Frames about the socket rather than the session: never numbered or replayed.
UNNUMBERED = frozenset({SESSION, RESUMED, NOT_RESUMED})


def request_ref(src: str) -> str | None:
    """The request reference of a client frame, or ``None`` if it is not a request."""
    if len(src) > 1 and src[0] == "?":
        return src[1:]
    return None


def reply_payload(value: Any) -> bytes:
    """Encode a handler's return value: bytes as is, str as UTF-8, else JSON."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


def reply_message(room: str, ref: str, value: Any) -> bytes:
    return encode(room, REPLY, "?" + ref, "", reply_payload(value))


def error_message(
    room: str, code: str, message: str, *, event: str = "", ref: str | None = None
) -> bytes:
    body = {"code": code, "message": message, "event": event}
    payload = json.dumps(body, separators=(",", ":")).encode()
    return encode(room, ERROR, "?" + ref if ref else "", "", payload)


def session_message(token: str, window: float, conn_id: str) -> bytes:
    body = {"token": token, "resume_window": window, "id": conn_id}
    return encode(ROOT, SESSION, "", "", json.dumps(body, separators=(",", ":")).encode())


def resumed_message(conn_id: str, replayed: int) -> bytes:
    body = {"id": conn_id, "replayed": replayed}
    return encode(ROOT, RESUMED, "", "", json.dumps(body, separators=(",", ":")).encode())


def not_resumed_message(reason: str) -> bytes:
    body = {"reason": reason}
    return encode(ROOT, NOT_RESUMED, "", "", json.dumps(body, separators=(",", ":")).encode())


@attrs.define
class ReplayBuffer:
    """Frames sent on a session and not yet acknowledged, numbered from 1.

    ``record`` is called with each frame as it is written to a socket;
    ``acknowledge(n)`` forgets frames up to ``n``; ``since(n)`` returns the
    frames after ``n`` for a replay, or ``None`` when some of them were
    already dropped because the buffer reached its bound.
    """

    max_frames: int
    max_bytes: int
    _frames: deque[bytes] = attrs.field(factory=deque)
    #: Number of the first frame in the buffer.
    _first: int = 1
    _bytes: int = 0
    #: Number of the last frame recorded.
    sent: int = 0
    #: The server-wide budget the buffered bytes count against, if any.
    budget: Budget | None = None

    def record(self, frame: bytes) -> None:
        self.sent += 1
        self._frames.append(frame)
        self._bytes += len(frame)
        if self.budget is not None:
            self.budget.used += len(frame)
        while self._frames and (
            len(self._frames) > self.max_frames or self._bytes > self.max_bytes
        ):
            self._forget_first()

    def acknowledge(self, count: int) -> None:
        count = min(count, self.sent)
        while self._frames and self._first <= count:
            self._forget_first()

    def _forget_first(self) -> None:
        size = len(self._frames.popleft())
        self._bytes -= size
        if self.budget is not None:
            self.budget.used -= size
        self._first += 1

    def clear(self) -> None:
        """Forget every frame (the session ended): give their bytes back."""
        if self.budget is not None:
            self.budget.used -= self._bytes
        self._first += len(self._frames)
        self._frames.clear()
        self._bytes = 0

    def restore(self, first: int, frames: list[bytes]) -> None:
        """Take over frames ``first``, ``first + 1``, ... of a session numbered elsewhere.

        For a session moved from another node: the buffer must be empty, and
        numbering goes on after the last of ``frames``.
        """
        assert not self._frames, "restore() needs an empty buffer"
        self._first = first
        self.sent = first - 1
        for frame in frames:
            self.record(frame)

    def since(self, last: int) -> list[bytes] | None:
        """Frames numbered above ``last``; ``None`` if any of them is gone."""
        if last > self.sent or last < 0:
            return None
        if last + 1 < self._first:
            return None
        return list(self._frames)[last + 1 - self._first :]

    @property
    def buffered_bytes(self) -> int:
        return self._bytes
