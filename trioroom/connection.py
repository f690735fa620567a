"""One client connection and the nursery that serves it.

A :class:`Connection` is what handlers see: an ID, the claims from
authentication, its rooms, and ways to send. While its socket is up it runs a
nursery of three tasks:

* the **reader** takes complete messages from the transport and hands them to
  the server, one at a time, so a connection's messages are handled in order;
* the **writer** takes every frame queued at that moment from a trio memory
  channel of fixed capacity and writes them in one ``send_all``;
* the **heartbeat** pings the peer and closes the connection when a pong does
  not come back in time. It never waits on the outbound queue, so it keeps
  working when the queue is full or the peer stopped reading.

Everything sent to a connection goes through :meth:`Connection.deliver`
(:mod:`trioroom.outbound`), which never blocks and writes directly where it
can.

The engines' transports (:mod:`trioroom.engines`) only move bytes; this
module and :mod:`trioroom.outbound` hold the policy.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
from websockets.exceptions import ProtocolError
from websockets.frames import Close

from .codes import ROOT, CloseCode, ErrorCode
from .engines.base import Transport
from .extension import ReplayBuffer, error_message, not_resumed_message
from .handshake import Request
from .log import ConnectionLogger
from .outbound import WRITER_STOP, ConnectionContext, Outbound, OutboundBatch, deliver_to_all
from .protocol import encode
from .wsframe import binary_frame

__all__ = ["Connection", "ConnectionContext", "OutboundBatch", "check_close", "deliver_to_all"]

logger = logging.getLogger("trioroom.connection")
_WRITER = "trioroom.Connection._writer"
_HEARTBEAT = "trioroom.Connection._heartbeat"


class Connection(Outbound):
    """A client of the server, as handlers see it.

    Attributes:
        id: The connection ID, a v4 UUID string, unique on every node.
        claims: What the server's ``authorize`` callback returned (``None``
            without one).
        request: The HTTP request that opened the connection.
    """

    # Slots: this object lives as long as the connection, so its size counts
    # in the per-connection memory. Application state goes in ``data``.
    __slots__ = (
        "__weakref__",
        "_closed",
        "_data",
        "_log",
        "_resumed",
        "_session_changed",
        "_sleeper",
        "_suspended",
        "_write_started",
        "bad_frames",
        "claims",
        "close_reason",
        "extended",
        "memberships",
        "rate_tokens",
        "rate_tokens_at",
        "request",
        "resume_token",
    )

    def __init__(
        self, context: ConnectionContext, conn_id: str, request: Request, claims: Any = None
    ) -> None:
        self.context = context
        self.id = conn_id
        self.request = request
        self.claims = claims
        # Insertion-ordered, so a disconnect leaves rooms newest first.
        self.memberships: dict[str, None] = {}
        settings = context.settings
        self._send_channel, self._receive_channel = trio.open_memory_channel[bytes](
            settings.queue_frames
        )
        self._queue_bytes_limit = settings.queue_bytes
        self._drop_oldest = settings.slow_consumer_policy == "drop_oldest"
        self._queued_bytes = 0
        # Shared by every connection of the server: queued, in-flight and
        # replay bytes all count against it.
        self._budget = context.budget
        # The direct path (see the module docstring): the transport while
        # its socket is served and can be written directly, else None.
        self._direct: Transport | None = None
        self._batch: OutboundBatch = context.batch
        # Frames held back by an active batch, written when it flushes.
        self.cork: list[bytes] | None = None
        self._cancel_scope: trio.CancelScope | None = None
        #: Set when the connection is closing: (code, reason, why).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.disconnect_reason: str = ""
        self._graceful = True
        # Made on demand (see the properties): most connections are never
        # waited on and never given application data.
        self._closed: trio.Event | None = None
        # The heartbeat task while it sleeps between ticks (see _stop_quietly).
        self._sleeper: trio.lowlevel.Task | None = None
        self._ended = False
        self._data: dict[str, Any] | None = None
        self.frames_dropped = 0
        self.bad_frames = 0
        self.rate_tokens = float(settings.rate_burst)
        self.rate_tokens_at = 0.0
        self._log: ConnectionLogger | None = None
        # The trioroom.v1 extension (see trioroom.extension).
        #: True when the client negotiated ``trioroom.v1``.
        self.extended = False
        self.resume_token: str | None = None
        self.replay: ReplayBuffer | None = None
        #: True while the socket is gone and the session waits to be resumed.
        self.suspended = False
        #: The session may outlive its socket: frames keep queueing while the
        #: socket closes. The server clears it once the session ends for good.
        self.may_resume = False
        # Created when a session opens (trioroom.v1 only).
        self._session_changed: trio.Event | None = None
        self._suspended: trio.Event | None = None
        self._resumed = False
        # Frames written before anything queued, outside the numbering.
        self.preamble: list[bytes] = []
        self._inflight: list[bytes] = []
        # Bytes of _inflight still counted in the budget (none when the
        # replay buffer took them over).
        self._inflight_bytes = 0
        self._write_started: float | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id}>"

    @property
    def closed(self) -> trio.Event:
        """Set once the connection is closed and has left its rooms."""
        if self._closed is None:
            self._closed = trio.Event()
            if self._ended:
                self._closed.set()
        return self._closed

    def set_closed(self) -> None:
        """The connection has left its rooms and run its hooks: :attr:`closed` is set."""
        self._ended = True
        if self._closed is not None:
            self._closed.set()

    @property
    def data(self) -> dict[str, Any]:
        """Free for the application: per-connection state of your own."""
        if self._data is None:
            self._data = {}
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value

    @property
    def log(self) -> ConnectionLogger:
        """A logger whose records carry this connection's ID."""
        if self._log is None:
            self._log = ConnectionLogger(logger, {"conn_id": self.id})
        return self._log

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at debug level with the connection's ID, when debug is on."""
        # Checked first: the logger adapter would otherwise be made (and kept,
        # ~300 bytes) for every connection just to drop the record.
        if logger.isEnabledFor(logging.DEBUG):
            self.log.debug(msg, *args, **kwargs)

    @property
    def rooms(self) -> frozenset[str]:
        """Names of the rooms this connection is in."""
        return frozenset(self.memberships)

    @property
    def remote_address(self) -> str | None:
        """The client's IP address, when known."""
        return self.request.remote_address

    # -- sending ---------------------------------------------------------

    async def send(
        self, event: str, payload: bytes | str = b"", *, room: str = ROOT, src: str = ""
    ) -> bool:
        """Send an event to this connection only.

        Returns ``False`` when the connection is closed or its queue is full.
        """
        await trio.lowlevel.checkpoint()
        if isinstance(payload, str):
            payload = payload.encode()
        return self.deliver(binary_frame(encode(room, event, "", src, payload)))

    async def broadcast(self, room: str, event: str, payload: bytes | str = b"") -> int:
        """Send to every member of ``room`` except this connection, as its sender."""
        return await self.context.broadcast(room, event, payload, exclude=self.id, src=self.id)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection: queued frames are still written, then a close frame.

        Raises ``ValueError`` for a code that may not be sent (use 1000-1014
        or 3000-4999) or a reason over 123 bytes.
        """
        check_close(code, reason)
        self.abort(code, reason, "server_close", graceful=True)
        await self.closed.wait()

    def abort(self, code: int, reason: str, why: str, *, graceful: bool = False) -> None:
        """Close without waiting.

        ``graceful`` lets the writer finish what is queued before the close
        frame; otherwise the connection's tasks are cancelled at once.
        """
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.disconnect_reason = why
            self._graceful = graceful
        if self.suspended:
            assert self._session_changed is not None
            self._session_changed.set()
        elif graceful and self._graceful and self._cancel_scope is not None:
            self._wake_writer()
        elif self._cancel_scope is not None:
            self._cancel_scope.cancel()

    # -- the nursery ------------------------------------------------------

    async def run(self, transport: Transport) -> None:
        """Run reader, writer and heartbeat until one of them ends the connection."""
        transport.attach(self._wake_writer)
        self.rate_tokens_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self.close_code is not None:  # aborted before the nursery existed
                    nursery.cancel_scope.cancel()
                if self.preamble:
                    self._wake_writer()
                self.start_direct(transport)
                # Constant names: trio would otherwise format one per task.
                nursery.start_soon(self._writer, transport, nursery.cancel_scope, name=_WRITER)
                nursery.start_soon(self._heartbeat, transport, name=_HEARTBEAT)
                # The reader runs here, in the nursery's own task: one task
                # and one coroutine fewer per connection, and it is cancelled
                # with the others all the same.
                handle = self.context.handle
                batch = self._batch
                while (data := await transport.receive()) is not None:
                    following = transport.next_buffered()
                    if following is None:
                        # One message in this read: its frames go out one by
                        # one, at once (a cork would cost more than it saves).
                        await handle(self, data)
                        continue
                    # Several messages from one read: one write per recipient
                    # for all of them. The server flushes the batch before
                    # anything that may yield (a handler, a join); it is
                    # re-armed for each message.
                    try:
                        while data is not None:
                            batch.active = True
                            await handle(self, data)
                            data, following = following, transport.next_buffered()
                    finally:
                        batch.flush()
                self._reader_ended(transport)
                if not self._stop_quietly():
                    nursery.cancel_scope.cancel()
        finally:
            self.stop_direct()

    def _reader_ended(self, transport: Transport) -> None:
        """The peer closed, vanished or broke the protocol: record how."""
        if self.close_code is None:
            if transport.flooded:
                # Counted as disconnects{reason="ping_flood"}; a client can
                # reconnect and flood again, so the log line is rate-bounded.
                self.context.drop_log.log(
                    logging.WARNING,
                    "ping_flood",
                    "closing: ping flood (over the ping rate limit, or pongs not read)",
                    extra={"conn_id": self.id},
                )
                self.close_code = CloseCode.POLICY_VIOLATION
                self.close_reason = "ping flood"
                self.disconnect_reason = "ping_flood"
            elif (error := transport.protocol_error) is not None:
                if self.extended and error[0] == CloseCode.MESSAGE_TOO_BIG:
                    # Written before the close frame: the client learns why.
                    self.deliver(
                        binary_frame(
                            error_message(
                                ROOT, ErrorCode.MESSAGE_TOO_BIG, error[1] or "message too big"
                            )
                        )
                    )
                self.close_code, self.close_reason = error
                self.disconnect_reason = "protocol_error"
                self.log.info("protocol error: %s (close %d)", error[1], error[0])
            else:
                code, reason = transport.peer_close or (CloseCode.ABNORMAL_CLOSURE, "")
                self.close_code = code
                self.close_reason = reason
                self.disconnect_reason = "peer"

    def _abort_sleep(self, _: Any) -> trio.lowlevel.Abort:
        # Cancelled (the tick's deadline, or the nursery): trio reschedules the
        # heartbeat itself, so _stop_quietly() must not, even before it runs.
        self._sleeper = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _stop_quietly(self) -> bool:
        """Let the writer and the heartbeat return, if both are idle; else ``False``.

        Cheaper than cancelling them, which raises through each task and
        leaves the nursery an exception group to take apart, once per
        connection.
        """
        sleeper = self._sleeper
        if sleeper is None or not self._receive_channel.statistics().tasks_waiting_receive:
            return False
        # The writer waits on an empty queue: the stop reaches it first.
        self._send_channel.send_nowait(WRITER_STOP)
        self._sleeper = None
        trio.lowlevel.reschedule(sleeper)
        return True

    async def _writer(self, transport: Transport, scope: trio.CancelScope) -> None:
        receive = self._receive_channel.receive
        receive_nowait = self._receive_channel.receive_nowait
        while True:
            first = await receive()
            if first is WRITER_STOP:
                return
            frames = [first]
            # _queued_bytes is the size of what the channel holds, so it says
            # whether more is waiting; asking receive_nowait until it raises
            # WouldBlock would cost an exception per write. (No local names
            # the last frame: it would stay alive while the writer waits.)
            queued = self._queued_bytes - len(frames[0])
            while queued > 0:
                frames.append(receive_nowait())
                queued -= len(frames[-1])
            taken = self._queued_bytes - queued
            self._queued_bytes = queued
            if self.replay is not None:
                # The replay buffer holds these bytes from now on.
                self._budget.used -= taken
                self._record(frames)
            else:
                # (On top of what a direct write left in the transport.)
                self._inflight_bytes += taken
            if self.preamble:
                frames = self.preamble + frames
                self.preamble = []
            # Until written, these frames still belong to the queue: a close
            # that cancels this task writes them before its close frame.
            self._inflight = frames
            # The heartbeat task enforces write_timeout from this timestamp: a
            # cancel scope per write would cost more than the write itself.
            self._write_started = trio.current_time()
            try:
                await transport.write(frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The peer is gone; the reader will see EOF too.
                self._peer_gone()
                return
            self._write_started = None
            self._budget.used -= self._inflight_bytes
            self._inflight_bytes = 0
            # Drop references now: a waiting coroutine frame would keep the
            # last batch (a root join_ack of 100 IDs is ~4 KiB) alive.
            self._inflight = frames = []
            if self.close_code is not None:
                # A graceful close: everything queued before it is written.
                scope.cancel()
                return

    async def _heartbeat(self, transport: Transport) -> None:
        """Ping the peer, and end writes that take longer than ``write_timeout``.

        Wakes every ``tick``; while a pong is outstanding it pings again each
        tick (a pong answers every earlier ping) so the write deadline is still
        checked on time.
        """
        settings = self.context.settings
        interval = settings.ping_interval
        ping_timeout = settings.ping_timeout
        write_timeout = settings.write_timeout
        tick = write_timeout / 2 if interval is None else min(interval, write_timeout / 2)
        next_ping = trio.current_time() + interval if interval is not None else math.inf
        ping_sent: float | None = None
        while True:
            if ping_sent is None:
                # trio.sleep(tick) without its three wrapper coroutines: an
                # idle connection spends its life here, so their frames would
                # be memory held per connection.
                with trio.move_on_after(tick):
                    self._sleeper = trio.lowlevel.current_task()
                    try:
                        await trio.lowlevel.wait_task_rescheduled(self._abort_sleep)
                    finally:
                        self._sleeper = None
                    # Woken, not timed out: _stop_quietly() ended the connection.
                    return
            else:
                remaining = ping_sent + ping_timeout - trio.current_time()
                with trio.move_on_after(max(0.0, min(tick, remaining))):
                    await transport.ping()
                    ping_sent = None
                    next_ping = trio.current_time() + (interval or math.inf)
            now = trio.current_time()
            started = self._write_started
            if started is not None and now - started >= write_timeout:
                self.context.metrics.frames_dropped["write_timeout"] += len(self._inflight)
                self.log.warning("write took over %.1fs: closing", write_timeout)
                self._graceful = False
                self.abort(CloseCode.INTERNAL_ERROR, "write timeout", "write_timeout")
                return
            if ping_sent is not None and now - ping_sent >= ping_timeout:
                self.context.metrics.heartbeat_failures += 1
                self.log.info("no pong within %.1fs: closing", ping_timeout)
                self.abort(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", "heartbeat_timeout")
                return
            if ping_sent is None and now >= next_ping:
                ping_sent = now

    # -- session suspension (trioroom.v1) ------------------------------------

    def open_session(self, session_frame: bytes) -> None:
        """This connection has a ``trioroom.v1`` session: its socket may be resumed.

        ``session_frame`` (the token) goes out before anything else.
        """
        self.may_resume = True
        self._session_changed = trio.Event()
        self._suspended = trio.Event()
        self.preamble.append(session_frame)

    def not_resumed(self, reason: str) -> None:
        """Tell the client, first thing, that the session it named is not resumed."""
        self.preamble.append(binary_frame(not_resumed_message(reason)))

    async def wait_suspended(self) -> None:
        """Return once the socket of this session is gone (see :meth:`suspend`)."""
        assert self._suspended is not None
        await self._suspended.wait()

    def suspend(self) -> None:
        """The socket is gone but the session stays: frames queue up for a resume."""
        self.suspended = True
        self.close_code = None
        self.close_reason = ""
        self.disconnect_reason = ""
        self._graceful = True
        self._cancel_scope = None
        self._resumed = False
        # What was being written went with the socket; the replay buffer has
        # it (only the end of a direct write was still counted here).
        self._inflight = []
        self._budget.used -= self._inflight_bytes
        self._inflight_bytes = 0
        self._session_changed = trio.Event()
        assert self._suspended is not None
        self._suspended.set()

    async def wait_for_resume(self) -> bool:
        """True once another socket took the session over; False when it ended."""
        assert self._session_changed is not None
        await self._session_changed.wait()
        return self._resumed

    def take_over(self, preamble: list[bytes]) -> None:
        """Called by the task of the resuming socket, which now serves the session."""
        self.suspended = False
        self._suspended = trio.Event()
        self._resumed = True
        self.preamble = preamble
        assert self._session_changed is not None
        self._session_changed.set()

    # -- moving a session between nodes (docs/scaling.md) -------------------------

    def adopt_session(self) -> None:
        """This connection carries on a session moved from another node.

        It starts suspended: frames queue up until :meth:`take_over`.
        """
        self.may_resume = True
        self.suspended = True
        self._session_changed = trio.Event()
        self._suspended = trio.Event()
        self._suspended.set()

    def hand_over(self) -> None:
        """The suspended session leaves this node: the task waiting for a resume
        returns without cleanup, and the caller owns the session from now on.

        Frames keep queueing (under the usual bounds) until the move is done.
        """
        assert self.suspended and self._session_changed is not None
        self._resumed = True
        self._session_changed.set()

    async def close_transport(self, transport: Transport, *, keep_queue: bool = False) -> None:
        """Send the close frame (after queued frames when graceful), bounded in time.

        ``keep_queue`` leaves queued frames for the session's next socket.
        """
        if self.disconnect_reason == "replaced":
            # The client has already left this socket for a new one: no
            # closing handshake to wait for on a link that may be dead.
            await close_stream_of(transport)
            return
        queued = [] if keep_queue else self.take_pending()
        pending = queued if self._graceful else []
        code = self.close_code if self.close_code is not None else CloseCode.NORMAL
        with trio.move_on_after(self.context.settings.close_timeout):
            try:
                await transport.close(code, self.close_reason, pending)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def check_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` unless ``code`` and ``reason`` can go in a close frame."""
    try:
        Close(code, reason).check()
    except ProtocolError:
        raise ValueError(f"close code {code} cannot be sent in a close frame") from None
    if len(reason.encode()) > 123:
        raise ValueError("a close reason is at most 123 bytes")


async def close_stream_of(transport: Transport) -> None:
    """Close a transport without a closing handshake."""
    await transport.abort()
