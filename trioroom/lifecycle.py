"""A connection's life: open, serve, suspend and resume, close, clean up.

:class:`Lifecycle` runs each connection from its 101 to its end: it joins
``root``, runs the connection's nursery, keeps an extended session waiting
for a resume when its socket drops, and always cleans up (rooms left, hooks
run, slots and budget given back), however the connection ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from .admission import Admission
from .codes import ROOT, CloseCode
from .connection import Connection
from .dispatch import Dispatcher
from .engines.base import Transport
from .extension import resumed_message
from .hooks import Hooks
from .hub import Hub, Sessions
from .metrics import Metrics, close_code_label
from .settings import Settings
from .wsframe import binary_frame

__all__ = ["Lifecycle"]


class Lifecycle:
    """Serves connections of one server, from the handshake to the end."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        admission: Admission,
        hub: Hub[Connection],
        sessions: Sessions[Connection],
        dispatch: Dispatcher,
        hooks: Hooks,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._admission = admission
        self._hub = hub
        self._sessions = sessions
        self._dispatch = dispatch
        self._hooks = hooks
        #: ``async (fresh, transport, token) -> reason | None``: resume a session
        #: this node does not hold (another node's), or say why not.
        self.remote_resume: Callable[[Connection, Transport, str], Awaitable[str | None]] | None
        self.remote_resume = None

    async def serve(self, conn: Connection, transport: Transport, *, resumed: bool = False) -> None:
        """Join ``root``, run the connection's nursery, and always clean up.

        An extended session whose socket drops is suspended instead, for up to
        ``resume_window`` seconds; if another socket resumes it, that socket's
        task takes the session over and this one returns without cleanup.
        """
        owner = True
        transport_closed = False
        try:
            if not resumed:
                if conn.extended and self.settings.resume_window > 0:
                    conn.open_session(self._sessions.open(conn, conn.id))
                    assert conn.resume_token is not None
                    self._dispatch.backplane.session_opened(conn.resume_token, conn.id)
                # The root join_ack is queued (or written) before the connection
                # can be found by ID, so it is always the first frame the client
                # receives.
                conn.start_direct(transport)
                await self._dispatch.join(conn, ROOT, check=False)
                self._hub.register(conn)
                self._admission.handshaking -= 1
                self.metrics.connections_opened += 1
                conn.debug("connected from %s", conn.remote_address)
                if "connect" in self._hooks:
                    await self._hooks.run("connect", conn)
            while True:
                transport_closed = False
                await conn.run(transport)
                if not (
                    conn.may_resume
                    and self._sessions.may_suspend(
                        conn, shutting_down=self._admission.shutting_down
                    )
                ):
                    break
                with trio.CancelScope(shield=True):
                    await conn.close_transport(transport, keep_queue=True)
                transport_closed = True
                self.metrics.disconnects["suspended"] += 1
                conn.log.info("socket lost (%s): session suspended", conn.disconnect_reason)
                conn.suspend()
                with trio.move_on_after(self.settings.resume_window):
                    if await conn.wait_for_resume():
                        owner = False
                        return
                if conn.close_code is None:
                    conn.close_code = CloseCode.ABNORMAL_CLOSURE
                    conn.disconnect_reason = "resume_expired"
                break
        finally:
            if owner:
                # (A session taken over is another socket's now, direct path
                # included.)
                await self.finish(conn, None if transport_closed else transport)

    async def finish(self, conn: Connection, transport: Transport | None) -> None:
        """The connection is over: leave its rooms, close ``transport``, run the hooks."""
        conn.stop_direct()
        conn.may_resume = False
        with trio.CancelScope(shield=True):
            token = conn.resume_token
            if self._sessions.end(conn) and token is not None:
                self._dispatch.backplane.session_closed(token)
            await self._disconnect(conn)
            self._record_close(conn)
            if transport is not None:
                await conn.close_transport(transport)
            conn.set_closed()
            conn.release()
            if "disconnect" in self._hooks:
                # Shielded so that hooks run even when cancelled, and
                # therefore bounded: shutdown must end.
                await self._hooks.run("disconnect", conn, limit=self.settings.hook_timeout)

    async def resume_or_serve(self, conn: Connection, transport: Transport, token: str) -> None:
        """Resume the session ``token`` names on this socket, or serve a new one."""
        reason = await self._try_resume(conn, transport, token)
        if reason == "unknown_token" and self.remote_resume is not None:
            # Not a session of this node: maybe another node's.
            reason = await self.remote_resume(conn, transport, token)
        if reason is None:
            return
        conn.log.info("session not resumed: %s", reason)
        conn.not_resumed(reason)
        await self.serve(conn, transport)

    async def _try_resume(self, fresh: Connection, transport: Transport, token: str) -> str | None:
        """Resume the session of ``token`` on a new socket; return why not, or ``None``."""
        last_seen = fresh.request.query.get("last", "0")
        session, last, reason = self._sessions.find(token, fresh.claims, last_seen)
        if reason == "moving":
            # Being handed over to another node: once that is settled, the
            # session is either here still or there (then asked for).
            with trio.move_on_after(self.settings.close_timeout * 4 + 10):
                while reason == "moving":
                    await trio.sleep(0.05)
                    session, last, reason = self._sessions.find(token, fresh.claims, last_seen)
        if session is None:
            return "expired" if reason == "moving" else reason
        if not session.suspended:
            # The old socket still looks alive to us: the client knows better.
            session.abort(CloseCode.GOING_AWAY, "replaced by a resumed socket", "replaced")
            with trio.move_on_after(self.settings.close_timeout + 1):
                while not session.suspended and self._sessions.get(token) is session:
                    await session.wait_suspended()
            if not session.suspended:
                return "expired"
        assert session.replay is not None
        frames = session.replay.since(last)
        if frames is None:
            session.abort(CloseCode.ABNORMAL_CLOSURE, "", "resume_gap")
            return "buffer_overflow"
        session.replay.acknowledge(last)
        # The session carries on with the new request's address.
        self._admission.handshaking -= 1
        self._admission.release_address(session.remote_address)
        session.request = fresh.request
        session.log.info("session resumed after frame %d: replaying %d", last, len(frames))
        self.metrics.disconnects["resumed"] += 1
        session.take_over([binary_frame(resumed_message(session.id, len(frames))), *frames])
        await self.serve(session, transport, resumed=True)
        return None

    def _record_close(self, conn: Connection) -> None:
        metrics = self.metrics
        metrics.connections_closed += 1
        metrics.disconnects[conn.disconnect_reason or "cancelled"] += 1
        if conn.close_code is not None:
            # Codes from the peer are bucketed (a client picks any of 2,000);
            # codes this server sent are the application's own choice.
            code = conn.close_code
            label = close_code_label(code) if conn.disconnect_reason == "peer" else int(code)
            metrics.close_codes[label] += 1
        conn.debug(
            "disconnected: %s (code %s %s)",
            conn.disconnect_reason or "cancelled",
            conn.close_code,
            conn.close_reason,
        )

    async def _disconnect(self, conn: Connection) -> None:
        """Leave every room, telling the remaining members; forget the connection."""
        if not self._hub.unregister(conn):
            # Cancelled before registration finished.
            self._admission.handshaking -= 1
        self._admission.release_address(conn.remote_address)
        await self._dispatch.leave_all(conn)
