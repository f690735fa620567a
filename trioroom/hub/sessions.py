"""Sessions of the ``trioroom.v1`` extension: tokens, and who may resume what.

Plain bookkeeping: waiting for a socket to be resumed, and replacing a socket
that still looks alive, happen in the connection (I/O); the rules of whether
and what to resume are here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ..budget import Budget
from ..codes import CloseCode
from ..extension import ReplayBuffer, session_message
from ..settings import Settings
from ..wsframe import binary_frame

__all__ = ["ENDED_REASONS", "Resumable", "Sessions", "claims_digest"]

#: Why a session ended, as told to a client that tries to resume it.
ENDED_REASONS = {
    "resume_expired": "expired",
    "slow_consumer": "buffer_overflow",
    "memory_budget": "buffer_overflow",
    "resume_gap": "buffer_overflow",
    "peer": "closed",
    "kicked": "kicked",
    "shutdown": "server_shutdown",
    # A move to another node failed half-way (docs/scaling.md, *Resuming on
    # any node*): the session ended here.
    "handover_failed": "expired",
}
#: Ended sessions remembered, so a late resume learns why rather than
#: ``unknown_token``.
_ENDED_KEPT = 10_000
#: Disconnect reasons after which a socket is suspended rather than closed.
_SUSPENDED_AFTER = frozenset({"heartbeat_timeout", "write_timeout", "replaced"})


class Resumable(Protocol):
    """What the session table reads of a connection."""

    claims: Any
    resume_token: str | None
    replay: ReplayBuffer | None
    close_code: int | None
    disconnect_reason: str


S = TypeVar("S", bound=Resumable)


def claims_digest(claims: Any) -> str:
    """A fingerprint of ``authorize``'s claims that another node can compare.

    Claims that JSON cannot hold are compared by ``repr``: objects without a
    ``repr`` of their own differ from node to node, so such a session can only
    be resumed on the node that holds it (``identity_mismatch`` elsewhere).
    """
    text = json.dumps(claims, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class Sessions(Generic[S]):
    """Open sessions by resume token, and why recent ones ended."""

    def __init__(
        self,
        settings: Settings,
        budget: Budget,
        *,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        self._settings = settings
        self._budget = budget
        self._new_token = new_token
        self._open: dict[str, S] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        #: Tokens of sessions being handed over to another node: not resumable here.
        self.moving: set[str] = set()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, token: str) -> S | None:
        """The open session of ``token``, or ``None``."""
        return self._open.get(token)

    def open(self, conn: S, conn_id: str) -> bytes:
        """Give ``conn`` a token and a replay buffer; return the ``trioroom.session`` frame.

        The frame must reach the client before any numbered frame.
        """
        settings = self._settings
        token = conn.resume_token = self._new_token()
        conn.replay = ReplayBuffer(
            settings.resume_buffer_frames, settings.resume_buffer_bytes, budget=self._budget
        )
        self._open[token] = conn
        return binary_frame(session_message(token, settings.resume_window, conn_id))

    def items(self) -> list[tuple[str, S]]:
        """Open sessions: ``(token, connection)``."""
        return list(self._open.items())

    def end(self, conn: S) -> bool:
        """The session of ``conn`` is over for good; remember why.

        Returns ``False`` when ``conn`` had no open session here.
        """
        token = conn.resume_token
        if token is None or self._open.get(token) is not conn:
            return False
        del self._open[token]
        self.moving.discard(token)
        self._ended[token] = ENDED_REASONS.get(conn.disconnect_reason, "closed")
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)
        return True

    def adopt(self, conn: S, token: str) -> None:
        """``conn`` carries on the session ``token`` that another node held."""
        conn.resume_token = token
        self._open[token] = conn

    def release(self, conn: S) -> None:
        """The session of ``conn`` moved to another node: forget it, as if never here."""
        token = conn.resume_token
        if token is not None and self._open.get(token) is conn:
            del self._open[token]
            self.moving.discard(token)

    def handover_refusal(self, token: str, digest: str, last: int) -> tuple[S | None, str | None]:
        """Whether another node may take over session ``token``: ``(session, None)``
        or ``(None, reason)``, the ``not_resumed`` reason.

        ``digest`` is :func:`claims_digest` of the claims the resuming socket
        authenticated with.
        """
        session = self._open.get(token)
        if session is None:
            return None, self._ended.get(token, "unknown_token")
        if token in self.moving:
            return None, "expired"
        if claims_digest(session.claims) != digest:
            return None, "identity_mismatch"
        if last < 0:
            return None, "bad_request"
        return session, None

    def may_suspend(self, conn: S, *, shutting_down: bool) -> bool:
        """Whether the lost socket of ``conn`` leaves its session open for a resume."""
        if (
            conn.resume_token is None
            or shutting_down
            or self._open.get(conn.resume_token) is not conn
        ):
            return False
        why = conn.disconnect_reason
        if why == "peer":
            # Any close frame from the client is deliberate and ends the
            # session; only a socket that vanished (1006) is suspended.
            return conn.close_code == CloseCode.ABNORMAL_CLOSURE
        return why in _SUSPENDED_AFTER

    def find(self, token: str, claims: Any, last: str) -> tuple[S | None, int, str | None]:
        """The session a resume names: ``(session, last frame seen, None)``,
        or ``(None, 0, reason)`` with the ``not_resumed`` reason."""
        session = self._open.get(token)
        if session is None:
            return None, 0, self._ended.get(token, "unknown_token")
        if token in self.moving:
            # Being handed over to another node: the caller waits and asks again.
            return None, 0, "moving"
        if session.claims != claims:
            return None, 0, "identity_mismatch"
        try:
            seen = int(last)
        except ValueError:
            return None, 0, "bad_request"
        return session, seen, None
