"""One client connection: its outbound queue and the nursery that serves it.

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

Everything sent to a connection goes through :meth:`Connection._deliver`,
which never blocks: frames from any sender reach a recipient in the order
they were queued, and a full queue triggers the slow-consumer policy instead
of delaying the sender.

On a plain socket (``Transport.direct``) a frame usually skips the queue: when
the queue is empty and the writer is not writing, the delivering task writes
it itself (``Transport.send_now``), so a delivery costs no task wake-up and no
trip through the scheduler. Only what the kernel does not take goes to the
writer, which then owns the socket until it has written everything. While a
reader handles several messages from one read, an :class:`OutboundBatch`
gathers each recipient's frames and writes them with one system call at the
end ("corking").

The transports (the native sans-I/O engine in :mod:`trioroom.transport`, the
trio-websocket adapter) only move bytes; this module holds the policy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import trio
from websockets.exceptions import ProtocolError
from websockets.frames import Close

from .codes import ROOT, CloseCode, ErrorCode
from .extension import ReplayBuffer, error_message
from .handshake import Request
from .log import ConnectionLogger
from .protocol import encode
from .wsframe import binary_frame

if TYPE_CHECKING:
    from .server import Server

__all__ = ["CloseCode", "Connection", "OutboundBatch", "Transport", "deliver_to_all"]

logger = logging.getLogger("trioroom.connection")
_WRITER = "trioroom.Connection._writer"
_FULL = {"slow_consumer": "queue full", "memory_budget": "server buffer budget full"}
_HEARTBEAT = "trioroom.Connection._heartbeat"


class Transport(Protocol):
    """What a connection needs from a WebSocket implementation.

    Only the connection's reader calls :meth:`receive` and
    :meth:`next_buffered`, and only its writer calls :meth:`write`;
    :meth:`send_now` may be called by any task, but only while the writer has
    nothing to write (see ``Connection._deliver``).
    """

    #: ``(code, reason)`` of the close frame the peer sent, once it did.
    peer_close: tuple[int, str] | None
    #: Set when the peer sent pings faster than allowed; the reader then ends.
    flooded: bool
    #: True when :meth:`send_now` can write without the writer (a plain socket).
    direct: bool

    @property
    def protocol_error(self) -> tuple[int, str] | None:
        """The close sent after the peer broke the protocol (1002, 1009), if any."""

    @property
    def unsent(self) -> int:
        """Bytes :meth:`send_now` left for the writer to write first."""

    def attach(self, wake_writer: Any) -> None:
        """Give the transport a callable that wakes the writer task."""

    async def receive(self) -> bytes | None:
        """The next complete message, or ``None`` once the peer is gone."""

    def next_buffered(self) -> bytes | None:
        """A message already read with the previous one, without waiting, or ``None``."""

    def send_now(self, data: bytes) -> bool:
        """Write without waiting (direct transports only); ``False`` if bytes are left.

        What is left is written by the next :meth:`write` or :meth:`close`,
        before anything else. Raises ``trio.BrokenResourceError`` when the
        peer is gone.
        """

    async def write(self, frames: list[bytes]) -> None:
        """Write WebSocket binary frames (and any pending control frames)."""

    async def ping(self) -> None:
        """Send a ping and return when its pong arrives."""

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        """Write ``pending`` frames, then close with ``code``; wait for the peer."""

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""


class OutboundBatch:
    """Corks direct writes while one task handles several messages in a row.

    While :attr:`active`, a frame for a connection that could be written at
    once is held back (``Connection._cork``) and the connection listed here;
    :meth:`flush` then writes each listed connection's frames with one system
    call. A task must flush before it can yield (before any ``await`` that
    may schedule another task): other tasks then never see a batch in
    progress, and a frame is never held longer than the synchronous run of
    work that produced it.
    """

    __slots__ = ("active", "corked")

    def __init__(self) -> None:
        self.active = False
        self.corked: list[Connection] = []

    def flush(self) -> None:
        """End the batch: write every corked connection's frames."""
        self.active = False
        corked = self.corked
        if corked:
            self.corked = []
            for conn in corked:
                conn._flush_cork()


def deliver_to_all(members: Iterable[tuple[str, Connection]], frame: bytes, exclude: str) -> int:
    """Deliver ``frame`` to every member but ``exclude``; return how many.

    The fan-out loop: a frame for a member whose frames are corked in this
    batch is appended right here, without a call per delivery.
    """
    delivered = 0
    for member_id, member in members:
        if member_id != exclude:
            cork = member._cork
            if cork is not None:
                cork.append(frame)
            else:
                member._deliver(frame)
            delivered += 1
    return delivered


class Connection:
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
        "_batch",
        "_budget",
        "_cancel_scope",
        "_closed",
        "_cork",
        "_data",
        "_direct",
        "_drop_oldest",
        "_ended",
        "_graceful",
        "_inflight",
        "_inflight_bytes",
        "_log",
        "_may_resume",
        "_preamble",
        "_queue_bytes_limit",
        "_queued_bytes",
        "_receive_channel",
        "_resumed",
        "_rooms",
        "_send_channel",
        "_session_changed",
        "_suspended",
        "_tokens",
        "_tokens_at",
        "_write_started",
        "bad_frames",
        "claims",
        "close_code",
        "close_reason",
        "disconnect_reason",
        "extended",
        "frames_dropped",
        "id",
        "replay",
        "request",
        "resume_token",
        "server",
        "suspended",
    )

    def __init__(self, server: Server, conn_id: str, request: Request, claims: Any = None) -> None:
        self.server = server
        self.id = conn_id
        self.request = request
        self.claims = claims
        # Insertion-ordered, so a disconnect leaves rooms newest first.
        self._rooms: dict[str, None] = {}
        settings = server.settings
        self._send_channel, self._receive_channel = trio.open_memory_channel[bytes](
            settings.queue_frames
        )
        self._queue_bytes_limit = settings.queue_bytes
        self._drop_oldest = settings.slow_consumer_policy == "drop_oldest"
        self._queued_bytes = 0
        # Shared by every connection of the server: queued, in-flight and
        # replay bytes all count against it.
        self._budget = server._budget
        # The direct path (see the module docstring): the transport while
        # its socket is served and can be written directly, else None.
        self._direct: Transport | None = None
        self._batch: OutboundBatch = server._batch
        # Frames held back by an active batch, written when it flushes.
        self._cork: list[bytes] | None = None
        self._cancel_scope: trio.CancelScope | None = None
        #: Set when the connection is closing: (code, reason, why).
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.disconnect_reason: str = ""
        self._graceful = True
        # Made on demand (see the properties): most connections are never
        # waited on and never given application data.
        self._closed: trio.Event | None = None
        self._ended = False
        self._data: dict[str, Any] | None = None
        self.frames_dropped = 0
        self.bad_frames = 0
        self._tokens = float(settings.rate_burst)
        self._tokens_at = 0.0
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
        self._may_resume = False
        # Created when a session opens (trioroom.v1 only).
        self._session_changed: trio.Event | None = None
        self._suspended: trio.Event | None = None
        self._resumed = False
        # Frames written before anything queued, outside the numbering.
        self._preamble: list[bytes] = []
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

    def _set_closed(self) -> None:
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

    def _debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # Checked first: the logger adapter would otherwise be made (and kept,
        # ~300 bytes) for every connection just to drop the record.
        if logger.isEnabledFor(logging.DEBUG):
            self.log.debug(msg, *args, **kwargs)

    @property
    def rooms(self) -> frozenset[str]:
        """Names of the rooms this connection is in."""
        return frozenset(self._rooms)

    @property
    def remote_address(self) -> str | None:
        """The client's IP address, when known."""
        return self.request.remote_address

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the outbound queue."""
        return self._queued_bytes

    @property
    def queued_frames(self) -> int:
        """Frames waiting in the outbound queue."""
        return self._send_channel.statistics().current_buffer_used

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
        return self._deliver(binary_frame(encode(room, event, "", src, payload)))

    async def broadcast(self, room: str, event: str, payload: bytes | str = b"") -> int:
        """Send to every member of ``room`` except this connection, as its sender."""
        return await self.server.broadcast(room, event, payload, exclude=self.id, src=self.id)

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

    def _deliver(self, frame: bytes) -> bool:
        """Write or queue one encoded frame without blocking.

        Written at once (or corked) when the direct path is free, else queued
        under the slow-consumer policy.
        """
        cork = self._cork
        if cork is not None:
            # Frames corked earlier in this (synchronous) batch go first; a
            # close since then is handled when the batch is flushed.
            cork.append(frame)
            return True
        if (self.close_code is not None and not self._may_resume) or self._ended:
            return False
        # Nothing queued and nothing being written: the frame may go now.
        if (
            self._direct is not None
            and self.close_code is None
            and not self._queued_bytes
            and not self._inflight
            and not self._inflight_bytes
        ):
            batch = self._batch
            if batch.active:
                self._cork = [frame]
                batch.corked.append(self)
            else:
                self._write_now(frame, None)
            return True
        return self._enqueue(frame)

    def _start_direct(self, transport: Transport) -> None:
        """Write directly to ``transport`` from now on, where it can.

        The server calls it before the ``root`` join, so that even the first
        frame (the ``join_ack``) costs no writer wake-up.
        """
        if transport.direct:
            self._direct = transport

    def _stop_direct(self) -> None:
        """The socket is closing: only the close path writes to it from now on."""
        self._direct = None

    def _flush_cork(self) -> None:
        frames = self._cork
        self._cork = None
        if not frames or self._ended:
            return
        # The queue was empty and the writer idle when the cork began, and a
        # batch never yields, so neither can have changed since: only a close.
        if self._direct is not None and self.close_code is None:
            self._write_now(frames[0] if len(frames) == 1 else b"".join(frames), frames)
            return
        # Closing since the batch began: the frames join the queue, and a
        # graceful close still writes them before its close frame.
        for frame in frames:
            self._enqueue(frame)

    def _write_now(self, data: bytes, frames: list[bytes] | None) -> None:
        """The direct path: hand ``data`` to the kernel; the writer gets what is left.

        ``data`` is ``frames`` joined, or (``frames`` is ``None``) one frame.
        """
        transport = self._direct
        assert transport is not None
        if self.replay is not None:
            # Numbered as sent, like the writer's frames.
            self._record(frames if frames is not None else [data])
        if self._preamble:
            # Frames outside the numbering that must come first (the session
            # frame, a resume's replay): they go out with these.
            data = b"".join([*self._preamble, data])
            self._preamble = []
        try:
            done = transport.send_now(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The peer is gone (the writer finds out the same way).
            self._peer_gone()
            return
        if not done:
            # The end of the frame waits in the transport; until the writer
            # has written it, nothing else may be written directly.
            left = transport.unsent
            self._inflight_bytes += left
            self._budget.used += left
            self._wake_writer()

    def _peer_gone(self) -> None:
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL_CLOSURE
            self.disconnect_reason = "peer"
        self._graceful = False
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _enqueue(self, frame: bytes) -> bool:
        """Put one frame in the outbound queue; apply the slow-consumer policy."""
        size = len(frame)
        budget = self._budget
        if (
            self._queued_bytes + size <= self._queue_bytes_limit
            and budget.used + size <= budget.limit
        ):
            try:
                self._send_channel.send_nowait(frame)
            except trio.WouldBlock:
                pass
            else:
                self._queued_bytes += size
                budget.used += size
                return True
        return self._overflow(frame)

    def _overflow(self, frame: bytes) -> bool:
        metrics = self.server.metrics
        size = len(frame)
        budget = self._budget
        stats = self._send_channel.statistics()
        # The connection's own bounds come first: a full queue is a slow
        # consumer whatever the rest of the server holds. Otherwise the frame
        # fits this queue but not the server's budget, and this recipient,
        # the one whose frame does not fit, pays.
        own_full = (
            self._queued_bytes + size > self._queue_bytes_limit
            or stats.current_buffer_used >= stats.max_buffer_size
        )
        why = "slow_consumer" if own_full else "memory_budget"
        if self._may_resume and (self.suspended or self.close_code is not None):
            # The socket is gone and its replay would now have a gap: the
            # session cannot be resumed any more.
            metrics.frames_dropped["session_overflow" if own_full else why] += 1
            self.log.info("%s while the socket is down: ending the session", _FULL[why])
            self.disconnect_reason = why
            self._may_resume = False
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer", why)
            return False
        if not self._drop_oldest:
            metrics.frames_dropped[why] += 1
            if own_full:
                self.log.warning(
                    "outbound queue full (%d frames, %d bytes): disconnecting slow consumer",
                    self.queued_frames,
                    self._queued_bytes,
                )
            else:
                self._log_over_budget("disconnecting the recipient")
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer", why)
            return False
        if size > self._queue_bytes_limit or size > budget.limit:
            metrics.frames_dropped[
                "too_large_for_queue" if size > self._queue_bytes_limit else why
            ] += 1
            self.frames_dropped += 1
            return False
        dropping = "drop_oldest" if own_full else why
        while True:
            try:
                old = self._receive_channel.receive_nowait()
            except trio.WouldBlock:
                break
            self._queued_bytes -= len(old)
            budget.used -= len(old)
            if old:
                metrics.frames_dropped[dropping] += 1
                self.frames_dropped += 1
            if self._queued_bytes + size <= self._queue_bytes_limit and budget.fits(size):
                try:
                    self._send_channel.send_nowait(frame)
                except trio.WouldBlock:
                    continue
                self._queued_bytes += size
                budget.used += size
                if not own_full:
                    self._log_over_budget("dropped the recipient's oldest frames")
                return True
        # Nothing of this connection's is left to drop: the budget is held by
        # others, and this frame cannot be queued.
        metrics.frames_dropped[why] += 1
        self.frames_dropped += 1
        self._log_over_budget("dropped a frame to the recipient")
        return False

    def _log_over_budget(self, action: str) -> None:
        budget = self._budget
        # The server's bounded log: over-budget drops can come with every frame.
        self.server._drop_log.log(
            logging.WARNING,
            "memory_budget",
            "server buffer budget full (%d of %d bytes): %s",
            budget.used,
            budget.limit,
            action,
            extra={"conn_id": self.id},
        )

    def _wake_writer(self) -> None:
        # An empty frame writes nothing but makes the writer flush the
        # transport's control frames. When the queue is full the writer has
        # work already, so the wake-up is not needed.
        try:
            self._send_channel.send_nowait(b"")
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    # -- rate limit --------------------------------------------------------

    def _take_token(self) -> bool:
        settings = self.server.settings
        assert settings.rate_limit  # only asked when rate limiting is on
        now = trio.current_time()
        self._tokens = min(
            float(settings.rate_burst), self._tokens + (now - self._tokens_at) * settings.rate_limit
        )
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # -- the nursery ------------------------------------------------------

    async def _serve(self, transport: Transport) -> None:
        """Run reader, writer and heartbeat until one of them ends the connection."""
        transport.attach(self._wake_writer)
        self._tokens_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self.close_code is not None:  # aborted before the nursery existed
                    nursery.cancel_scope.cancel()
                if self._preamble:
                    self._wake_writer()
                self._start_direct(transport)
                # Constant names: trio would otherwise format one per task.
                nursery.start_soon(self._writer, transport, nursery.cancel_scope, name=_WRITER)
                nursery.start_soon(self._heartbeat, transport, name=_HEARTBEAT)
                # The reader runs here, in the nursery's own task: one task
                # and one coroutine fewer per connection, and it is cancelled
                # with the others all the same.
                handle = self.server._handle_data
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
                nursery.cancel_scope.cancel()
        finally:
            self._stop_direct()

    def _reader_ended(self, transport: Transport) -> None:
        """The peer closed, vanished or broke the protocol: record how."""
        if self.close_code is None:
            if transport.flooded:
                # Counted as disconnects{reason="ping_flood"}; a client can
                # reconnect and flood again, so the log line is rate-bounded.
                self.server._drop_log.log(
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
                    self._deliver(
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

    async def _writer(self, transport: Transport, scope: trio.CancelScope) -> None:
        receive = self._receive_channel.receive
        receive_nowait = self._receive_channel.receive_nowait
        while True:
            frames = [await receive()]
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
            if self._preamble:
                frames = self._preamble + frames
                self._preamble = []
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

    def _record(self, frames: list[bytes]) -> None:
        # Numbered as sent: a frame lost with the socket is replayed.
        assert self.replay is not None
        for frame in frames:
            if frame:
                self.replay.record(frame)

    async def _heartbeat(self, transport: Transport) -> None:
        """Ping the peer, and end writes that take longer than ``write_timeout``.

        Wakes every ``tick``; while a pong is outstanding it pings again each
        tick (a pong answers every earlier ping) so the write deadline is still
        checked on time.
        """
        settings = self.server.settings
        interval = settings.ping_interval
        ping_timeout = settings.ping_timeout
        write_timeout = settings.write_timeout
        tick = write_timeout / 2 if interval is None else min(interval, write_timeout / 2)
        next_ping = trio.current_time() + interval if interval is not None else math.inf
        ping_sent: float | None = None
        while True:
            if ping_sent is None:
                # trio.sleep(tick) without its two wrapper coroutines: an idle
                # connection spends its life here, so their frames would be
                # memory held per connection.
                with trio.move_on_after(tick):
                    await trio.sleep_forever()
            else:
                remaining = ping_sent + ping_timeout - trio.current_time()
                with trio.move_on_after(max(0.0, min(tick, remaining))):
                    await transport.ping()
                    ping_sent = None
                    next_ping = trio.current_time() + (interval or math.inf)
            now = trio.current_time()
            started = self._write_started
            if started is not None and now - started >= write_timeout:
                self.server.metrics.frames_dropped["write_timeout"] += len(self._inflight)
                self.log.warning("write took over %.1fs: closing", write_timeout)
                self._graceful = False
                self.abort(CloseCode.INTERNAL_ERROR, "write timeout", "write_timeout")
                return
            if ping_sent is not None and now - ping_sent >= ping_timeout:
                self.server.metrics.heartbeat_failures += 1
                self.log.info("no pong within %.1fs: closing", ping_timeout)
                self.abort(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", "heartbeat_timeout")
                return
            if ping_sent is None and now >= next_ping:
                ping_sent = now

    # -- session suspension (trioroom.v1) ------------------------------------

    def _suspend(self) -> None:
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

    async def _wait_for_resume(self) -> bool:
        """True once another socket took the session over; False when it ended."""
        assert self._session_changed is not None
        await self._session_changed.wait()
        return self._resumed

    def _take_over(self, preamble: list[bytes]) -> None:
        """Called by the task of the resuming socket, which now serves the session."""
        self.suspended = False
        self._suspended = trio.Event()
        self._resumed = True
        self._preamble = preamble
        assert self._session_changed is not None
        self._session_changed.set()

    def _pending_frames(self) -> list[bytes]:
        """Take what is still queued; used for a graceful close."""
        frames, self._inflight = self._inflight, []
        try:
            while True:
                frames.append(self._receive_channel.receive_nowait())
        except trio.WouldBlock:
            pass
        self._budget.used -= self._queued_bytes + self._inflight_bytes
        self._queued_bytes = 0
        self._inflight_bytes = 0
        return [f for f in frames if f]

    def _release(self) -> None:
        """Give back everything the ended connection holds against the budget."""
        self._pending_frames()
        if self.replay is not None:
            self.replay.clear()

    async def _close_transport(self, transport: Transport, *, keep_queue: bool = False) -> None:
        """Send the close frame (after queued frames when graceful), bounded in time.

        ``keep_queue`` leaves queued frames for the session's next socket.
        """
        if self.disconnect_reason == "replaced":
            # The client has already left this socket for a new one: no
            # closing handshake to wait for on a link that may be dead.
            await close_stream_of(transport)
            return
        queued = [] if keep_queue else self._pending_frames()
        pending = queued if self._graceful else []
        code = self.close_code if self.close_code is not None else CloseCode.NORMAL
        with trio.move_on_after(self.server.settings.close_timeout):
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
