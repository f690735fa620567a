"""The client's dispatcher (trio): runs the application's handlers and fills the rooms' queues."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..exceptions import ServerError
from .room import Inbox
from .session import Deliver, SessionLost

__all__ = ["Dispatcher", "ErrorHandler", "SessionLostHandler"]

logger = logging.getLogger("trioroom.client")

#: ``async handler(error)``, registered with :meth:`Client.on_error`.
ErrorHandler = Callable[[ServerError], Awaitable[Any]]
#: ``async handler(lost)``, registered with :meth:`Client.on_session_lost`.
SessionLostHandler = Callable[[SessionLost], Awaitable[Any]]
T = TypeVar("T")


class Dispatcher:
    """Hands what the reader got to the application, one handler call at a time.

    Handler calls wait in a queue of ``queue_size``; :meth:`run` makes them
    in arrival order. The reader waits when that queue or a room's is full;
    each such wait counts as a stall (:attr:`stalls`, :attr:`stalling`), so
    the heartbeat does not blame the network for pongs the reader did not read.
    """

    def __init__(self, queue_size: int) -> None:
        self._calls_send, self._calls = trio.open_memory_channel[
            tuple[Callable[[Any], Awaitable[Any]], Any]
        ](queue_size)
        #: How many times the reader waited for a full queue...
        self.stalls = 0
        #: ...and how many such waits are going on.
        self.stalling = 0
        self.error_handler: ErrorHandler | None = None
        self.session_lost_handler: SessionLostHandler | None = None

    async def run(self) -> None:
        """Make the handler calls, in order, until :meth:`close`."""
        async for handler, arg in self._calls:
            await handler(arg)

    def close(self) -> None:
        self._calls_send.close()

    async def deliver(self, event: Deliver[Inbox]) -> None:
        """A message of a joined room: to its handler, else (unless a notice) to its queue."""
        inbox = event.room.handle
        msg = event.msg
        handler = inbox.handlers.get(msg.event)
        if handler is not None:
            await self._call_soon(handler, msg)
        elif not event.notice:
            try:
                await self._put(inbox.queue, msg)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the room was left while the queue was full

    async def server_error(self, error: ServerError) -> None:
        handler = self.error_handler
        if handler is None:
            logger.warning("error from the server (room %r): %s", error.room, error)
            return
        await self._call_soon(handler, error)

    async def session_lost(self, lost: SessionLost) -> None:
        handler = self.session_lost_handler
        if handler is None:
            logger.warning(
                "session lost (%s): %s is now %s; joining %d rooms again",
                lost.reason,
                lost.old_id,
                lost.new_id,
                len(lost.rooms),
            )
            return
        await self._call_soon(handler, lost)

    async def _call_soon(self, handler: Callable[[Any], Awaitable[Any]], arg: Any) -> None:
        try:
            await self._put(self._calls_send, (handler, arg))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _put(self, channel: trio.MemorySendChannel[T], item: T) -> None:
        """Send to a bounded channel; a wait is counted as a stall of the reader."""
        try:
            channel.send_nowait(item)
            return
        except trio.WouldBlock:
            pass
        self.stalls += 1
        self.stalling += 1
        try:
            await channel.send(item)
        finally:
            self.stalling -= 1
