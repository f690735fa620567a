"""Every exception trioroom raises, in one hierarchy.

:class:`TrioroomError` is the base. A server application meets
:class:`Reject` and :class:`RequestError` (it raises them) and
:class:`FrameError` (the codec raises it); a client program meets
:class:`ClientError` and its subclasses.
"""

from __future__ import annotations

from typing import Self

from .codes import CloseCode

__all__ = [
    "ClientError",
    "ConnectionClosed",
    "ConnectionRejected",
    "FrameError",
    "Reject",
    "RequestError",
    "RequestFailed",
    "ServerError",
    "TrioroomError",
]


class TrioroomError(Exception):
    """Base class of trioroom's exceptions."""


class FrameError(TrioroomError, ValueError):
    """A frame does not follow the wire format.

    The message says what is wrong and at which byte offset; :attr:`offset`
    holds that offset for programs.
    """

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"malformed frame: {reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


class Reject(TrioroomError):
    """Raise from ``authorize`` (or a join check) to refuse with an HTTP status.

    ``status`` is sent before any WebSocket frame, with ``body`` as a short
    plain-text explanation.
    """

    def __init__(self, status: int = 401, body: str = "Unauthorized") -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


class RequestError(TrioroomError):
    """Raise from a handler to answer an extended client's request with an error.

    ``code`` and the message reach the client in a ``trioroom.error`` event;
    any other exception is reported as ``handler_error`` without its text.
    """

    def __init__(self, message: str, code: str = "handler_error") -> None:
        super().__init__(message)
        self.code = code


class ClientError(TrioroomError):
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
        elif code == CloseCode.ABNORMAL_CLOSURE:
            text = f"connection lost (1006): {reason or 'no close frame'}"
        else:
            text = f"connection closed by the server with code {code}"
            if reason:
                text += f": {reason}"
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.local = local

    def copy(self) -> ConnectionClosed:
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


class ServerError(ClientError):
    """A ``trioroom.error`` event from the server (extended connections only).

    Errors that answer no request (``rate_limited``, ``malformed``, a join of
    a room lost with its session...) go to the handler registered with
    :meth:`Client.on_error`; see ``docs/protocol.md`` for the codes.

    Attributes:
        code: What went wrong: ``join_refused``, ``rate_limited``,
            ``malformed``, ``not_a_member``, ``unknown_destination``,
            ``handler_error``, ``timeout``, or a code of the server
            application's ``RequestError``.
        message: The server's explanation.
        event: The event concerned, if the server said.
        room: The room field of the error frame.
    """

    def __init__(self, code: str, message: str = "", *, event: str = "", room: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.event = event
        self.room = room

    def copy(self) -> Self:
        return type(self)(self.code, self.message, event=self.event, room=self.room)


class RequestFailed(ServerError):
    """A request, or a join on an extended connection, did not succeed.

    Raised by :meth:`Room.request` and :meth:`Client.join`. ``code`` is the
    server's (see :class:`ServerError`), or one of the client's own:
    ``timeout`` (no answer within the request's timeout; the server uses the
    same code when its handler ran out of time) and ``session_lost`` (the
    request went out on a session that could not be resumed, so its answer
    can never come).
    """
