"""The names the protocol gives meaning to: the root room, close codes and error codes.

Every module takes these from here, so that each is defined once.
``docs/protocol.md`` and ``docs/operations.md`` say when each is used.
"""

from __future__ import annotations

import enum

__all__ = ["RESUMABLE_CLOSE_CODES", "ROOT", "CloseCode", "ErrorCode"]

#: The room every connection is in from the moment it opens.
ROOT = "root"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends. See ``docs/operations.md``."""

    NORMAL = 1000
    GOING_AWAY = 1001  # graceful shutdown
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008  # too many malformed frames, rate limit, ping flood
    MESSAGE_TOO_BIG = 1009
    ABNORMAL_CLOSURE = 1006  # recorded when the peer vanished without a close frame
    INTERNAL_ERROR = 1011  # heartbeat or write timeout
    TRY_AGAIN_LATER = 1013  # connection limits
    KICKED = 4000
    SLOW_CONSUMER = 4001
    ROOM_CLOSED = 4002


#: Close codes after which a trioroom server keeps an extended session for a
#: resume: no close frame (the network dropped) and its heartbeat or write
#: timeout (1011). Every other code ends the session.
RESUMABLE_CLOSE_CODES = frozenset({CloseCode.ABNORMAL_CLOSURE, CloseCode.INTERNAL_ERROR})


class ErrorCode(enum.StrEnum):
    """Codes of ``trioroom.error`` (documented in ``docs/protocol.md``)."""

    JOIN_REFUSED = "join_refused"
    RATE_LIMITED = "rate_limited"
    MESSAGE_TOO_BIG = "message_too_big"
    MALFORMED = "malformed"
    HANDLER_ERROR = "handler_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NOT_A_MEMBER = "not_a_member"
    UNKNOWN_DESTINATION = "unknown_destination"
    BACKPLANE_UNAVAILABLE = "backplane_unavailable"
