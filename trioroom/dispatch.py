"""Carrying out what the hub decides: writes, publishes, joins, leaves and handler calls.

The :class:`~trioroom.hub.Hub` returns effects; the :class:`Dispatcher`
performs them, and does the waiting the rules need: ``authorize_join``, the
backplane (under the room's lock), handlers and hooks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .backplane import Backplane
from .connection import Connection
from .hooks import Hooks
from .hub import Close, Deliver, Direct, Effect, Fanout, Handle, Hub, Join, Leave, Room
from .locks import RoomLocks
from .metrics import Metrics
from .outbound import OutboundBatch, deliver_to_all
from .protocol import Message
from .settings import Settings

__all__ = ["AuthorizeJoinCallback", "Dispatcher", "Handler"]

#: Effects whose performing may wait (a tuple: ``A | B`` would build a union per call).
_WAITING = (Join, Leave, Handle)

Handler = Callable[[Connection, Message], Awaitable[Any]]
AuthorizeJoinCallback = Callable[[Connection, str], Awaitable[bool]]


class Dispatcher:
    """Performs the hub's effects for one server."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        hub: Hub[Connection],
        backplane: Backplane,
        hooks: Hooks,
        batch: OutboundBatch,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hub = hub
        self.backplane = backplane
        self._hooks = hooks
        self._batch = batch
        self._locks = RoomLocks()
        self._rate_limited = bool(settings.rate_limit)
        #: Handlers by event name.
        self.handlers: dict[str, Handler] = {}
        #: ``async (conn, room) -> bool``, asked before each join.
        self.authorize_join: AuthorizeJoinCallback | None = None

    @property
    def backplane(self) -> Backplane:
        """Cross-node delivery; settable until the server serves."""
        return self._backplane

    @backplane.setter
    def backplane(self, backplane: Backplane) -> None:
        self._backplane = backplane
        self._distributed = self.hub.distributed = backplane.distributed

    async def handle(self, conn: Connection, data: bytes) -> None:
        """One inbound message: the hub's rules, then what they call for."""
        now = trio.current_time() if self._rate_limited else 0.0
        for effect in self.hub.receive(conn, data, now):
            # The hot kinds are performed inline rather than through
            # perform_one(): a broadcast or a DM per message, where a call
            # is a measurable share of its cost.
            if isinstance(effect, Fanout):
                self.fanout(effect)
            elif isinstance(effect, Direct):
                self.direct(effect)
            elif isinstance(effect, _WAITING):
                # Joins, leaves and handlers may yield to other tasks: a batch
                # of corked frames (see OutboundBatch) is written before them.
                self._batch.flush()
                if isinstance(effect, Join):
                    await self.join(conn, effect.room, ref=effect.ref)
                elif isinstance(effect, Leave):
                    await self.leave(conn, effect.room, ref=effect.ref)
                else:
                    await self._call_handler(conn, effect)
            else:
                self.perform_one(effect)

    def perform(self, effects: list[Effect]) -> None:
        """Carry out effects that need no waiting (every kind but joins, leaves, handlers)."""
        for effect in effects:
            self.perform_one(effect)

    def perform_one(self, effect: Effect) -> None:
        """Carry out one effect that needs no waiting."""
        # Most frequent first: a broadcast, then a reply or error, then a DM.
        if isinstance(effect, Fanout):
            self.fanout(effect)
        elif isinstance(effect, Deliver):
            effect.member.deliver(effect.frame)
        elif isinstance(effect, Direct):
            self.direct(effect)
        elif isinstance(effect, Close):
            effect.member.abort(effect.code, effect.reason, effect.why, graceful=effect.graceful)
        else:  # pragma: no cover - the hub returns these only from receive()
            raise AssertionError(f"cannot perform {effect!r} here")

    def deliver_local(self, room: Room[Connection] | None, frame: bytes, exclude: str) -> int:
        """Write ``frame`` to the local members of ``room`` but ``exclude``; how many."""
        if room is None:
            return 0
        delivered = deliver_to_all(room.members.items(), frame, exclude)
        metrics = self.metrics
        metrics.messages_out += delivered
        metrics.bytes_out += delivered * len(frame)
        return delivered

    def deliver_one(self, target: Connection, frame: bytes) -> bool:
        """Write ``frame`` to one local connection; ``False`` if it did not take it."""
        if target.deliver(frame):
            self.metrics.messages_out += 1
            self.metrics.bytes_out += len(frame)
            return True
        return False

    def fanout(self, effect: Fanout[Connection]) -> int:
        """Write one frame to the local members of a room, and publish it to the others."""
        delivered = self.deliver_local(effect.room, effect.frame, effect.exclude)
        metrics = self.metrics
        if self._distributed:
            self.backplane.publish_room(effect.name, effect.message, effect.exclude)
        if effect.count:
            metrics.broadcasts += 1
            metrics.fanout_deliveries += delivered
        return delivered

    def direct(self, effect: Direct[Connection]) -> bool:
        target = effect.target
        if target is not None:
            delivered = self.deliver_one(target, effect.frame)
        elif self._distributed:
            delivered = self.backplane.publish_direct(effect.dst, effect.message)
        else:
            delivered = False
            self.metrics.frames_dropped["unknown_dst"] += 1
            if effect.sender is not None:
                effect.sender.debug(
                    "direct message to unknown %s dropped", effect.dst, extra={"room": effect.room}
                )
        # Delivered and no request to answer: nothing to say to the sender
        # (the common case, decided here without building an empty list).
        if effect.sender is not None and (effect.ref is not None or not delivered):
            self.perform(self.hub.direct_done(effect, delivered))
        return delivered

    async def _call_handler(self, conn: Connection, effect: Handle) -> None:
        msg, ref = effect.message, effect.ref
        handler = self.handlers[msg.event]
        metrics = self.metrics
        metrics.handler_calls += 1
        started = time.perf_counter()
        try:
            if ref is None:
                await handler(conn, msg)
                return
            timeout = self.settings.request_timeout
            with trio.move_on_after(timeout) as scope:
                value = await handler(conn, msg)
            if scope.cancelled_caught:
                self.perform(self.hub.handler_done(conn, effect, timed_out=timeout))
            else:
                self.perform(self.hub.handler_done(conn, effect, value=value))
        except trio.Cancelled as exc:
            # The socket closed under the handler (or was replaced by a
            # resume): the request is still answered, on the session's queue.
            self.perform(self.hub.handler_done(conn, effect, error=exc))
            raise
        except Exception as exc:
            conn.log.exception(
                "handler for event %r raised",
                msg.event,
                extra={"event": msg.event, "room": msg.room},
            )
            self.perform(self.hub.handler_done(conn, effect, error=exc))
        finally:
            metrics.handler_seconds += time.perf_counter() - started

    # -- membership --------------------------------------------------------------

    async def join(
        self, conn: Connection, name: str, *, check: bool = True, ref: str | None = None
    ) -> bool:
        hub = self.hub
        if check:
            reason = hub.join_refusal(conn, name)
            if (
                reason is None
                and self.authorize_join is not None
                and not await self.authorize_join(conn, name)
            ):
                reason = "refused by authorize_join"
            if reason is not None:
                self.perform(hub.refuse_join(conn, name, reason, ref))
                return False
        async with self._locks.hold(name):
            if hub.room_full(conn, name):
                self.perform(hub.refuse_join(conn, name, "room is full", ref))
                return False
            remote: list[str] = []
            if self._distributed and not hub.is_member(conn, name):
                # Registered (and subscribed) first: the member list then has
                # every member on other nodes, and a member told of the joiner
                # can already reach it.
                await self.backplane.joined(name, conn.id)
                wanted = hub.remote_ids_wanted(conn, name)
                if wanted:
                    remote = await self.backplane.remote_members(name, limit=wanted)
            # No checkpoint from here to the ack, so nothing of this room
            # reaches the joiner before its join_ack.
            new, effects = hub.join(conn, name, remote=remote)
            self.perform(effects)
        if new:
            conn.debug("joined", extra={"room": name})
            if "join" in self._hooks:
                await self._hooks.run("join", conn, name)
        if ref is not None:
            self.perform(hub.replied(conn, name, ref))
        return True

    async def leave(
        self, conn: Connection, name: str, *, ack: bool = True, ref: str | None = None
    ) -> None:
        hub = self.hub
        left = False
        async with self._locks.hold(name):
            if hub.is_member(conn, name):
                if self._distributed:
                    # Unregistered before the notice goes out, so a member told
                    # of the leave no longer finds it in member lists.
                    await self.backplane.left(name, conn.id)
                left, effects = hub.leave(conn, name)
                self.perform(effects)
        conn.memberships.pop(name, None)
        if ack:
            self.perform([hub.leave_ack(conn, name)])
        if left:
            conn.debug("left", extra={"room": name})
            if "leave" in self._hooks:
                await self._hooks.run("leave", conn, name)
        if ref is not None:
            self.perform(hub.replied(conn, name, ref))

    async def leave_all(self, conn: Connection) -> None:
        """Leave every room of ``conn`` (``root`` last), telling the remaining members."""
        if self._distributed or "leave" in self._hooks:
            # Leaving may wait for the backplane or a hook: bounded.
            with trio.move_on_after(self.settings.close_timeout):
                for name in reversed(list(conn.memberships)):
                    await self.leave(conn, name, ack=False)
        else:
            # Nothing here can wait (room locks are only held across backplane
            # calls): no deadline, whose cancel scope would cost more than this.
            for name in reversed(list(conn.memberships)):
                await self.leave(conn, name, ack=False)
        for name in list(conn.memberships):
            # A room lock is stuck (e.g. a backplane call hanging): remove the
            # membership without it rather than leak it.
            self.perform(self.hub.leave(conn, name)[1])
