"""Sessions moving between nodes: the server's side of a handover.

A ``trioroom.v1`` client that comes back to a node that does not hold its
session resumes it there: the backplane asks the node holding it, which
suspends it and hands it over (``docs/scaling.md``, *Resuming on any node*).
:class:`SessionMover` is what the backplane uses of the server for that
(:class:`~trioroom.backplane.base.SessionHost`) on the old node, and what
:class:`~trioroom.lifecycle.Lifecycle` calls on the new one. The rules (who
may take what over) are in :class:`~trioroom.hub.Sessions`.
"""

from __future__ import annotations

from collections.abc import Collection

import trio

from .admission import Admission
from .backplane.base import HandoverFailed, MovedSession, SessionOffer
from .codes import CloseCode
from .connection import Connection, ConnectionContext
from .dispatch import Dispatcher
from .engines.base import Transport
from .extension import ReplayBuffer, resumed_message
from .hub import ENDED_REASONS, Hub, Sessions
from .hub.sessions import claims_digest
from .lifecycle import Lifecycle
from .metrics import Metrics
from .outbound import deliver_to_all
from .settings import Settings
from .wsframe import binary_frame

__all__ = ["SessionMover"]


class SessionMover:
    """Hands this node's sessions over to other nodes, and takes theirs over."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        admission: Admission,
        hub: Hub[Connection],
        sessions: Sessions[Connection],
        lifecycle: Lifecycle,
        context: ConnectionContext,
        dispatch: Dispatcher,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        self.hub = hub
        self.sessions = sessions
        self.lifecycle = lifecycle
        self.context = context
        self.dispatch = dispatch
        # Sessions handed over and not released yet: ID -> (session, last).
        self._moving: dict[str, tuple[Connection, int]] = {}

    # -- the old node: SessionHost ------------------------------------------------------

    async def prepare_handover(self, token: str, digest: str, last: int) -> SessionOffer | str:
        """Suspend the session of ``token`` for another node; the offer, or the reason not to."""
        session, reason = self.sessions.handover_refusal(token, digest, last)
        if session is None:
            await trio.lowlevel.checkpoint()
            return reason or "unknown_token"
        self.sessions.moving.add(token)
        try:
            reason = await self._suspend(session, token, last)
        finally:
            if reason is not None:
                self.sessions.moving.discard(token)
        if reason is not None:
            return reason
        # The task waiting for a resume returns; the session is ours now.
        session.hand_over()
        self._moving[session.id] = (session, last)
        session.log.info("handing the session over to another node (after frame %d)", last)
        return SessionOffer(session.id, list(session.memberships))

    async def _suspend(self, session: Connection, token: str, last: int) -> str | None:
        if not session.suspended:
            # The old socket still looks alive to us: the client knows better.
            session.abort(CloseCode.GOING_AWAY, "replaced by a resumed socket", "replaced")
            with trio.move_on_after(self.settings.close_timeout + 1):
                while not session.suspended and self.sessions.get(token) is session:
                    await session.wait_suspended()
            if not session.suspended or self.sessions.get(token) is not session:
                return "expired"
        else:
            await trio.lowlevel.checkpoint()
        if not session.may_resume or session.close_code is not None:
            return ENDED_REASONS.get(session.disconnect_reason, "expired")
        if session.replay is None or session.replay.since(last) is None:
            session.abort(CloseCode.ABNORMAL_CLOSURE, "", "resume_gap")
            return "buffer_overflow"
        return None

    def release_session(self, conn_id: str) -> MovedSession | str:
        """The session is the other node's now: forget it here without a notice."""
        entry = self._moving.pop(conn_id, None)
        if entry is None:
            return "expired"
        session, last = entry
        self.hub.detach(session)
        self.sessions.release(session)
        self.admission.release_address(session.remote_address)
        reason: str | None = None
        if session.close_code is not None or not session.may_resume:
            # Overflowed or kicked while moving: the other node ends it.
            reason = ENDED_REASONS.get(session.disconnect_reason, "expired")
        frames = session.replay.since(last) if session.replay is not None else None
        if frames is None and reason is None:
            reason = "buffer_overflow"
        queued = session.take_pending()
        session.may_resume = False
        session.release()
        session.set_closed()
        self.metrics.connections_closed += 1
        self.metrics.disconnects["handed_over"] += 1
        if reason is not None:
            session.log.info("session handed over, ended: %s", reason)
            return reason
        assert frames is not None
        session.log.info(
            "session handed over: %d frames to replay, %d queued", len(frames), len(queued)
        )
        return MovedSession(last + 1, frames, queued)

    async def abandon_handover(self, conn_id: str) -> None:
        """The move failed before it happened: the session ends here."""
        entry = self._moving.pop(conn_id, None)
        if entry is None:
            await trio.lowlevel.checkpoint()
            return
        session, _ = entry
        if session.close_code is None:
            session.close_code = CloseCode.ABNORMAL_CLOSURE
            session.disconnect_reason = "handover_failed"
        session.log.info("handover failed: session ended")
        await self.lifecycle.finish(session, None)

    def open_sessions(self) -> list[tuple[str, str]]:
        """Resumable sessions of this node: ``(token, connection ID)``."""
        return [(token, conn.id) for token, conn in self.sessions.items()]

    def deliver_room_excluding(self, room: str, message: bytes, excluded: Collection[str]) -> int:
        """Deliver a message from another node to local members of ``room`` not in ``excluded``."""
        local = self.hub.room(room)
        if local is None:
            return 0
        frame = binary_frame(message)
        members = [(i, m) for i, m in local.members.items() if i not in excluded]
        delivered = deliver_to_all(members, frame, "")
        self.metrics.messages_out += delivered
        self.metrics.bytes_out += delivered * len(frame)
        self.metrics.fanout_deliveries += delivered
        return delivered

    # -- the new node -------------------------------------------------------------------

    async def resume(self, fresh: Connection, transport: Transport, token: str) -> str | None:
        """Resume on ``transport`` a session another node holds; ``None``, or why not."""
        try:
            last = int(fresh.request.query.get("last", "0"))
        except ValueError:
            await trio.lowlevel.checkpoint()
            return "bad_request"
        adopted: list[Connection] = []

        def adopt(offer: SessionOffer) -> None:
            # Synchronous: the backplane moves the connection right after.
            conn = Connection(self.context, offer.conn_id, fresh.request, fresh.claims)
            conn.extended = True
            conn.adopt_session()
            self.sessions.adopt(conn, token)
            self.hub.adopt(conn, offer.rooms)
            adopted.append(conn)

        backplane = self.dispatch.backplane
        result = await backplane.take_session(token, claims_digest(fresh.claims), last, adopt)
        conn = adopted[0] if adopted else None
        if isinstance(result, HandoverFailed):
            if conn is not None:
                await self._drop(conn, fresh, ended=result.transferred)
            return result.reason
        assert conn is not None
        conn.replay = ReplayBuffer(
            self.settings.resume_buffer_frames,
            self.settings.resume_buffer_bytes,
            budget=self.context.budget,
        )
        conn.replay.restore(result.first, result.replay)
        if not conn.put_first(result.queued):
            # Over the queue's bounds here: the session cannot go on whole.
            await self._drop(conn, fresh, ended=True)
            return "buffer_overflow"
        self.admission.handshaking -= 1
        self.metrics.connections_opened += 1
        self.metrics.disconnects["resumed"] += 1
        conn.log.info(
            "session resumed from another node after frame %d: replaying %d, %d queued",
            last,
            len(result.replay),
            len(result.queued),
        )
        conn.take_over([binary_frame(resumed_message(conn.id, len(result.replay))), *result.replay])
        await self.lifecycle.serve(conn, transport, resumed=True)
        return None

    async def _drop(self, conn: Connection, fresh: Connection, *, ended: bool) -> None:
        """An adopted connection whose move failed.

        ``ended``: it is this node's in the cluster, so it leaves its rooms
        here (the members are told); otherwise it never arrived and is only
        forgotten.
        """
        if ended:
            self.metrics.connections_opened += 1  # (counted closed by finish())
            if conn.close_code is None:
                conn.close_code = CloseCode.ABNORMAL_CLOSURE
                conn.disconnect_reason = "handover_failed"
            await self.lifecycle.finish(conn, None)
            # finish() gave back the address slot that ``fresh`` holds.
            self.admission.take_slot(fresh.request)
        else:
            self.hub.detach(conn)
            self.sessions.release(conn)
            conn.release()
            conn.set_closed()
            await trio.lowlevel.checkpoint()
