"""The client's outbound queue, and whether the connection still takes frames (trio)."""

from __future__ import annotations

import math
from collections import deque

import trio
import trio_websocket

from ..codes import CloseCode
from ..exceptions import ConnectionClosed
from .pending import Outgoing

__all__ = ["Outbox"]


class Outbox:
    """The frames waiting for the writer, and the connection's life as senders see it.

    Control frames (join, leave, acknowledgements) never wait; data frames
    take a credit first, so at most ``queue_size`` of them wait. The writer
    returns the credit once the frame is written.
    """

    def __init__(self, queue_size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Outgoing](math.inf)
        self._credit, self._credit_return = trio.open_memory_channel[None](queue_size)
        #: Frames for the next socket, before the queue (not written on the last one).
        self.carry: deque[Outgoing] = deque()
        #: ``True`` once :meth:`begin_close` was called: the writer drains the queue, then closes.
        self.closing = False
        #: Set once the writer drained the queue after :meth:`begin_close` (or cannot).
        self.writer_done = trio.Event()
        #: Set once the connection ended for good (:meth:`finish`).
        self.finished = trio.Event()
        #: Why it ended (``None`` until then).
        self.reason: ConnectionClosed | None = None
        #: The current socket; its close reason explains a failed send.
        self.ws: trio_websocket.WebSocketConnection | None = None
        #: A writer serves the queue (a socket is up).
        self.socket_up = False

    def check_open(self) -> None:
        """Raise :class:`ConnectionClosed` once the connection is closing or closed."""
        if self.closing or self.finished.is_set():
            raise self.closed_error()

    def closed_error(self) -> ConnectionClosed:
        """The :class:`ConnectionClosed` for an operation the closed connection cannot do."""
        if self.reason is not None:
            return self.reason.copy()
        if self.closing:
            return ConnectionClosed(1000, "", local=True)
        ws = self.ws
        reason = ws.closed if ws is not None else None
        if reason is not None:
            return ConnectionClosed(reason.code, reason.reason or "")
        return ConnectionClosed(CloseCode.ABNORMAL_CLOSURE)

    def send_control(self, item: Outgoing) -> None:
        """Queue a frame that never waits."""
        try:
            self._send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self.closed_error() from None

    async def send_data(self, item: Outgoing) -> None:
        """Queue a data frame; waits while ``queue_size`` of them wait already."""
        try:
            await self._credit.send(None)
            # No checkpoint between taking the credit and queueing the frame.
            self._send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self.closed_error() from None

    def queue_ack(self) -> None:
        """Ask the writer to acknowledge what came in (the count is read when it writes)."""
        try:
            self._send.send_nowait(Outgoing(b""))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def next(self) -> Outgoing | None:
        """The next queued frame for the writer; ``None`` once the queue is closed and empty."""
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    def written(self, item: Outgoing) -> None:
        """The writer is done with ``item``: a data frame gives its credit back."""
        if not item.data:
            return
        try:
            self._credit_return.receive_nowait()
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def begin_close(self) -> None:
        """Take no new frames; the writer writes those queued, then closes the socket."""
        if self.closing:
            return
        self.closing = True
        self._send.close()
        if not self.socket_up:
            self.writer_done.set()  # no writer: nothing can be drained

    def finish(self, error: ConnectionClosed | None) -> ConnectionClosed | None:
        """The connection ended (``error`` is ``None`` for a local close).

        Returns the reason to give every waiter, or ``None`` if it had ended already.
        """
        if self.finished.is_set():
            return None
        self.reason = error or ConnectionClosed(1000, "", local=True)
        self._send.close()
        self._credit_return.close()
        self.finished.set()
        return self.reason
