"""The outbound half of a connection: its queue, the direct path and the slow-consumer policy.

Everything sent to a connection goes through :meth:`Outbound.deliver`, which
never blocks: frames from any sender reach a recipient in the order they were
queued, and a full queue triggers the slow-consumer policy instead of delaying
the sender.

On a plain socket (``Transport.direct``) a frame usually skips the queue: when
the queue is empty and the writer is not writing, the delivering task writes
it itself (``Transport.send_now``), so a delivery costs no task wake-up and no
trip through the scheduler. Only what the kernel does not take goes to the
writer, which then owns the socket until it has written everything. While a
reader handles several messages from one read, an :class:`OutboundBatch`
gathers each recipient's frames and writes them with one system call at the
end ("corking").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio

from .budget import Budget
from .codes import CloseCode
from .engines.base import Transport
from .extension import ReplayBuffer
from .log import BoundedLog, ConnectionLogger
from .metrics import Metrics
from .settings import Settings

__all__ = ["WRITER_STOP", "ConnectionContext", "Outbound", "OutboundBatch", "deliver_to_all"]

#: Put in an idle writer's queue to make it return (see ``Connection.run``):
#: told apart from frames by identity, never written.
WRITER_STOP = bytes(16)

_FULL = {"slow_consumer": "queue full", "memory_budget": "server buffer budget full"}


@attrs.frozen(eq=False)
class ConnectionContext:
    """What every connection of one server shares: made once by the server."""

    settings: Settings
    metrics: Metrics
    #: Queued, in-flight and replay bytes of all connections count against it.
    budget: Budget
    #: Corks direct writes while a reader handles several messages of one read.
    batch: OutboundBatch
    #: Drops a client can cause at will are logged here, at a bounded rate.
    drop_log: BoundedLog
    #: ``async handle(conn, data)``: the server's rules for one inbound message.
    handle: Callable[[Any, bytes], Awaitable[None]]
    #: ``async broadcast(room, event, payload, exclude=, src=)``: the server's fan-out.
    broadcast: Callable[..., Awaitable[int]]


class OutboundBatch:
    """Corks direct writes while one task handles several messages in a row.

    While :attr:`active`, a frame for a connection that could be written at
    once is held back (``Outbound.cork``) and the connection listed here;
    :meth:`flush` then writes each listed connection's frames with one system
    call. A task must flush before it can yield (before any ``await`` that
    may schedule another task): other tasks then never see a batch in
    progress, and a frame is never held longer than the synchronous run of
    work that produced it.
    """

    __slots__ = ("active", "corked")

    def __init__(self) -> None:
        self.active = False
        self.corked: list[Outbound] = []

    def flush(self) -> None:
        """End the batch: write every corked connection's frames."""
        self.active = False
        corked = self.corked
        if corked:
            self.corked = []
            for conn in corked:
                conn.flush_cork()


def deliver_to_all(members: Iterable[tuple[str, Outbound]], frame: bytes, exclude: str) -> int:
    """Deliver ``frame`` to every member but ``exclude``; return how many.

    The fan-out loop: a frame for a member whose frames are corked in this
    batch is appended right here, without a call per delivery.
    """
    delivered = 0
    for member_id, member in members:
        if member_id != exclude:
            cork = member.cork
            if cork is not None:
                cork.append(frame)
            else:
                member.deliver(frame)
            delivered += 1
    return delivered


class Outbound:
    """The outbound queue and direct path of a :class:`~trioroom.Connection`.

    A base class, not an object of its own: a connection is one object
    (its size counts per idle connection), and this is the half of it that
    delivery touches. The attributes are the connection's slots.
    """

    __slots__ = (
        "_batch",
        "_budget",
        "_cancel_scope",
        "_direct",
        "_drop_oldest",
        "_ended",
        "_graceful",
        "_inflight",
        "_inflight_bytes",
        "_queue_bytes_limit",
        "_queued_bytes",
        "_receive_channel",
        "_send_channel",
        "close_code",
        "context",
        "cork",
        "disconnect_reason",
        "frames_dropped",
        "id",
        "may_resume",
        "preamble",
        "replay",
        "suspended",
    )

    id: str
    context: ConnectionContext
    close_code: int | None
    disconnect_reason: str
    frames_dropped: int
    replay: ReplayBuffer | None
    suspended: bool
    may_resume: bool
    #: Frames held back by an active batch, written when it flushes.
    cork: list[bytes] | None
    #: Frames written before anything queued, outside the numbering.
    preamble: list[bytes]
    _send_channel: trio.MemorySendChannel[bytes]
    _receive_channel: trio.MemoryReceiveChannel[bytes]
    _queue_bytes_limit: int
    _drop_oldest: bool
    _queued_bytes: int
    _budget: Budget
    _direct: Transport | None
    _batch: OutboundBatch
    _inflight: list[bytes]
    _inflight_bytes: int
    _ended: bool
    _graceful: bool
    _cancel_scope: trio.CancelScope | None

    @property
    def log(self) -> ConnectionLogger:
        raise NotImplementedError

    def abort(self, code: int, reason: str, why: str, *, graceful: bool = False) -> None:
        raise NotImplementedError

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the outbound queue."""
        return self._queued_bytes

    @property
    def queued_frames(self) -> int:
        """Frames waiting in the outbound queue."""
        return self._send_channel.statistics().current_buffer_used

    def deliver(self, frame: bytes) -> bool:
        """Write or queue one encoded frame without blocking.

        Written at once (or corked) when the direct path is free, else queued
        under the slow-consumer policy.
        """
        cork = self.cork
        if cork is not None:
            # Frames corked earlier in this (synchronous) batch go first; a
            # close since then is handled when the batch is flushed.
            cork.append(frame)
            return True
        if (self.close_code is not None and not self.may_resume) or self._ended:
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
                self.cork = [frame]
                batch.corked.append(self)
            else:
                self._write_now(frame, None)
            return True
        return self._enqueue(frame)

    def start_direct(self, transport: Transport) -> None:
        """Write directly to ``transport`` from now on, where it can.

        The server calls it before the ``root`` join, so that even the first
        frame (the ``join_ack``) costs no writer wake-up.
        """
        if transport.direct:
            self._direct = transport

    def stop_direct(self) -> None:
        """The socket is closing: only the close path writes to it from now on."""
        self._direct = None

    def flush_cork(self) -> None:
        frames = self.cork
        self.cork = None
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
        if self.preamble:
            # Frames outside the numbering that must come first (the session
            # frame, a resume's replay): they go out with these.
            data = b"".join([*self.preamble, data])
            self.preamble = []
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
        metrics = self.context.metrics
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
        if self.may_resume and (self.suspended or self.close_code is not None):
            # The socket is gone and its replay would now have a gap: the
            # session cannot be resumed any more.
            metrics.frames_dropped["session_overflow" if own_full else why] += 1
            self.log.info("%s while the socket is down: ending the session", _FULL[why])
            self.disconnect_reason = why
            self.may_resume = False
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
        self.context.drop_log.log(
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

    def _record(self, frames: list[bytes]) -> None:
        # Numbered as sent: a frame lost with the socket is replayed.
        assert self.replay is not None
        for frame in frames:
            if frame:
                self.replay.record(frame)

    def put_first(self, frames: list[bytes]) -> bool:
        """Queue ``frames`` ahead of everything queued so far.

        ``False`` when the queue overflowed (the slow-consumer policy applied).
        """
        queued = self.take_pending()
        for frame in [*frames, *queued]:
            if not self._enqueue(frame):
                return False
        return True

    def take_pending(self) -> list[bytes]:
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
        # (A stop the writer was cancelled before it took.)
        return [f for f in frames if f and f is not WRITER_STOP]

    def release(self) -> None:
        """Give back everything the ended connection holds against the budget."""
        self.take_pending()
        if self.replay is not None:
            self.replay.clear()
