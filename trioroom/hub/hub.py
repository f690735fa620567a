"""The hub: the room rules of ``docs/protocol.md``, without I/O.

The hub holds who is connected and who is in which room. It takes events (a
message arrived, a connection opened or closed, a join was authorised, a
handler returned, a message arrived from another node) and returns
:mod:`effects <trioroom.hub.effects>`: what must be written, published, called
or closed. It never awaits, reads a clock or touches a socket, so every rule
can be tested by feeding it events (``tests/test_hub.py``).

A join is the one rule that spans waits (``authorize_join``, the backplane):
the I/O layer asks :meth:`Hub.join_refusal` and :meth:`Hub.room_full`, does
its waiting under the room's lock, then calls :meth:`Hub.join`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from ..codes import ROOT, CloseCode, ErrorCode
from ..exceptions import FrameError, RequestError
from ..extension import (
    ACK,
    EXTENSION_PREFIX,
    ReplayBuffer,
    error_message,
    reply_message,
    request_ref,
)
from ..log import BoundedLog
from ..metrics import Metrics
from ..protocol import (
    CONTROL_CHARACTERS,
    MIN_FRAME_SIZE,
    RESERVED_EVENTS,
    Message,
    decode_fields,
    encode,
    member_list_payload,
)
from ..settings import Settings
from ..wsframe import binary_frame
from .effects import Close, Deliver, Direct, Effect, Fanout, Handle, Join, Leave
from .rooms import Room

__all__ = ["Hub", "Member"]

logger = logging.getLogger("trioroom.connection")
#: Finds a character that may not appear in room and event names.
_find_control = CONTROL_CHARACTERS.search


class Member(Protocol):
    """What the hub reads and keeps of a connection: plain attributes.

    The hub changes ``memberships``, ``bad_frames``, ``frames_dropped`` and
    the rate limit's tokens; the I/O layer owns everything else.
    """

    id: str
    #: True when the client negotiated ``trioroom.v1``.
    extended: bool
    #: Rooms the member is in, in the order it joined them.
    memberships: dict[str, None]
    bad_frames: int
    frames_dropped: int
    rate_tokens: float
    rate_tokens_at: float
    replay: ReplayBuffer | None


M = TypeVar("M", bound=Member)


class Hub(Generic[M]):
    """Rooms, members and the rules between them, for one server process.

    Args:
        settings: The server's settings (limits, caps, notices).
        metrics: Counters the rules update (messages in, drops by reason).
        distributed: Other nodes exist: notices and broadcasts are published
            even when no other member is local, and joins list remote members.
        drop_log: Where drops a client can cause at will are logged, at a
            bounded rate.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        distributed: bool = False,
        drop_log: BoundedLog | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.distributed = distributed
        self.drop_log = drop_log or BoundedLog(logger)
        #: Events that have a handler: they are handed over, never broadcast.
        self.handled: set[str] = set()
        self._rooms: dict[str, Room[M]] = {}
        self._members: dict[str, M] = {}
        self._rate_limit = settings.rate_limit or 0.0
        self._rate_burst = float(settings.rate_burst)

    # -- connections ---------------------------------------------------------

    def member(self, conn_id: str) -> M | None:
        """The registered local member with this ID, or ``None``."""
        return self._members.get(conn_id)

    def members(self) -> Iterable[M]:
        """Registered local members, oldest first."""
        return self._members.values()

    def __len__(self) -> int:
        return len(self._members)

    def register(self, member: M) -> None:
        """``member`` is connected (it has joined ``root``): others may reach it by ID."""
        self._members[member.id] = member

    def unregister(self, member: M) -> bool:
        """``member`` is gone; ``False`` if it was never registered."""
        if self._members.get(member.id) is member:
            del self._members[member.id]
            return True
        return False

    def adopt(self, member: M, rooms: Iterable[str]) -> None:
        """``member`` arrives from another node with its ``rooms``: no notice, no ``join_ack``.

        A session moved between nodes stays the member it was (limits were
        checked when it joined).
        """
        for name in rooms:
            room = self._rooms.get(name)
            if room is None:
                room = self._rooms[name] = Room(name)
            if member.id not in room.members:
                room.add(member.id, member)
            member.memberships[name] = None
        self.register(member)

    def detach(self, member: M) -> None:
        """``member`` moved to another node: gone from here, without notices."""
        for name in member.memberships:
            room = self._rooms.get(name)
            if room is not None and member.id in room.members:
                room.remove(member.id)
                if not room.members:
                    del self._rooms[name]
        self.unregister(member)

    # -- rooms -------------------------------------------------------------

    def room(self, name: str) -> Room[M] | None:
        """The room called ``name``, while it has local members."""
        return self._rooms.get(name)

    def room_names(self) -> list[str]:
        """Names of the rooms with local members."""
        return list(self._rooms)

    def room_count(self) -> int:
        return len(self._rooms)

    def local_rooms_of(self) -> dict[str, list[str]]:
        """Local membership: room name to member IDs."""
        return {name: list(room.members) for name, room in self._rooms.items()}

    # -- inbound messages ------------------------------------------------------

    def receive(self, member: M, data: bytes, now: float = 0.0) -> list[Effect]:
        """Apply the protocol's rules to one message from ``member``.

        ``now`` (seconds, any origin) feeds the rate limit. The hot path of
        the server: fields stay a tuple, and a :class:`Message` is built only
        for a handler.
        """
        metrics = self.metrics
        metrics.messages_in += 1
        metrics.bytes_in += len(data)
        if self._rate_limit and not self._take_token(member, now):
            return self._rate_limited(member, data)
        try:
            room, event, dst, src, payload = decode_fields(data)
        except FrameError as exc:
            return self._bad_frame(member, str(exc))
        ref = request_ref(src) if member.extended else None
        limit = self.settings.max_field_length
        # The four names take what the frame has besides its payload and the
        # five lengths: when that fits in the limit, each of them does.
        if len(data) - len(payload) - MIN_FRAME_SIZE > limit:
            for name, value in (("room", room), ("event", event), ("dst", dst), ("src", src)):
                if len(value.encode()) > limit:
                    error = FrameError(f"field {name!r} is longer than {limit} bytes", 0)
                    return self._bad_frame(member, str(error), ref=ref)
        # isprintable() is False for every control character (and for a few
        # harmless ones): the exact check runs only for those names.
        if not (room.isprintable() and event.isprintable()) and (
            _find_control(room) or _find_control(event)
        ):
            if event == "join":
                return self.refuse_join(member, room, "room name has control characters", ref)
            return self._bad_frame(member, "room or event name has control characters", ref=ref)
        # One test for all the names with a meaning (join and leave are
        # reserved, the acknowledgement is the extension's), not one per name.
        if event in RESERVED_EVENTS or event.startswith(EXTENSION_PREFIX):
            if event == "join":
                return [Join(room, ref)]
            if event == "leave":
                return [Leave(room, ref)]
            if event == ACK:
                # Consumed even without a session: it is never broadcast.
                if member.replay is not None:
                    try:
                        member.replay.acknowledge(int(payload))
                    except ValueError:
                        return self._bad_frame(member, "acknowledgement is not a number")
                return []
            # trioroom.* names are the extension's: a client forging one could
            # confuse other clients' frame counting.
            return self._bad_frame(
                member, f"clients may not send reserved event {event!r}", ref=ref
            )
        if dst:
            if room != ROOT and room not in member.memberships:
                # The recipient's client files a message under its room field:
                # without this, anyone could write into a room they may not join.
                return self._refuse_direct(member, room, event, ref)
            message = encode(room, event, dst, member.id, payload)
            target = self._members.get(dst)
            return [Direct(member, target, dst, message, binary_frame(message), room, event, ref)]
        if event in self.handled:
            return [Handle(Message(room, event, dst, member.id, payload), ref)]
        local = self._rooms.get(room)
        if local is None or member.id not in local.members:
            metrics.frames_dropped["not_a_member"] += 1
            return self._error(
                member, room, ErrorCode.NOT_A_MEMBER, f"not a member of room {room!r}", event, ref
            )
        message = encode(room, event, "", member.id, payload)
        fanout = Fanout(room, local, message, binary_frame(message), member.id)
        if ref is None:
            return [fanout]
        return [fanout, self._reply(member, room, ref, None)]

    def _take_token(self, member: M, now: float) -> bool:
        tokens = min(
            self._rate_burst, member.rate_tokens + (now - member.rate_tokens_at) * self._rate_limit
        )
        member.rate_tokens_at = now
        if tokens >= 1.0:
            member.rate_tokens = tokens - 1.0
            return True
        member.rate_tokens = tokens
        return False

    def _rate_limited(self, member: M, data: bytes) -> list[Effect]:
        self.metrics.frames_dropped["rate_limited"] += 1
        member.frames_dropped += 1
        settings = self.settings
        close = settings.rate_limit_policy == "close"
        self.drop_log.log(
            logging.WARNING if close else logging.INFO,
            "rate_limited",
            "over the rate limit (%g messages/s, burst %d): %s",
            settings.rate_limit,
            settings.rate_burst,
            "closing with 1008" if close else "message dropped",
            extra={"conn_id": member.id},
        )
        effects: list[Effect] = []
        if member.extended:
            # Decoded only to answer the request it may be.
            try:
                dropped: Message | None = Message.decode(data)
            except FrameError:
                dropped = None
            effects += self._error(
                member,
                dropped.room if dropped else ROOT,
                ErrorCode.RATE_LIMITED,
                "rate limit exceeded",
                dropped.event if dropped else "",
                request_ref(dropped.src) if dropped else None,
            )
        if close:
            # Graceful: the error event and what was queued before it go out
            # ahead of the close frame.
            effects.append(
                Close(
                    member, CloseCode.POLICY_VIOLATION, "rate limit", "rate_limited", graceful=True
                )
            )
        return effects

    def _refuse_direct(self, member: M, room: str, event: str, ref: str | None) -> list[Effect]:
        self.metrics.frames_dropped["not_a_member"] += 1
        member.frames_dropped += 1
        self.drop_log.log(
            logging.INFO,
            "direct_not_a_member",
            "direct message dropped: sender is not a member of its room",
            extra={"conn_id": member.id, "room": room, "event": event},
        )
        return self._error(
            member,
            room,
            ErrorCode.NOT_A_MEMBER,
            f"a direct message must use room {ROOT!r} or a room you are in",
            event,
            ref,
        )

    def _bad_frame(self, member: M, reason: str, *, ref: str | None = None) -> list[Effect]:
        member.bad_frames += 1
        self.metrics.frames_dropped["malformed"] += 1
        logger.info("dropped frame: %s", reason, extra={"conn_id": member.id})
        effects = self._error(member, ROOT, ErrorCode.MALFORMED, reason, "", ref)
        if member.bad_frames > self.settings.max_bad_frames:
            logger.warning(
                "closing after %d malformed frames", member.bad_frames, extra={"conn_id": member.id}
            )
            effects.append(
                Close(
                    member,
                    CloseCode.POLICY_VIOLATION,
                    "too many malformed frames",
                    "bad_frames",
                    graceful=False,
                )
            )
        return effects

    # -- answers to requests (trioroom.v1) ---------------------------------------

    def _reply(self, member: M, room: str, ref: str, value: Any) -> Deliver[M]:
        return Deliver(member, binary_frame(reply_message(room, ref, value)))

    def _error(
        self, member: M, room: str, code: str, text: str, event: str = "", ref: str | None = None
    ) -> list[Effect]:
        """Tell an extended client what went wrong (plain clients get nothing)."""
        if not member.extended:
            return []
        frame = binary_frame(error_message(room, code, text, event=event, ref=ref))
        return [Deliver(member, frame)]

    def error(
        self, member: M, room: str, code: str, text: str, *, event: str = "", ref: str | None = None
    ) -> list[Effect]:
        """A ``trioroom.error`` for ``member`` if it is extended (nothing otherwise)."""
        return self._error(member, room, code, text, event, ref)

    def direct_done(self, effect: Direct[M], delivered: bool) -> list[Effect]:
        """A direct message was delivered (or not): answer or report to its sender."""
        sender = effect.sender
        if sender is None:
            return []
        if delivered:
            if effect.ref is None:
                return []
            return [self._reply(sender, effect.room, effect.ref, None)]
        return self._error(
            sender,
            effect.room,
            ErrorCode.UNKNOWN_DESTINATION,
            f"no connection {effect.dst}",
            effect.event,
            effect.ref,
        )

    def handler_done(
        self,
        member: M,
        effect: Handle,
        *,
        value: Any = None,
        error: BaseException | None = None,
        timed_out: float | None = None,
    ) -> list[Effect]:
        """A handler returned ``value``, raised ``error`` or ran out of time:
        the answer to the request, if the message was one."""
        msg, ref = effect.message, effect.ref
        if timed_out is not None:
            return self._error(
                member,
                msg.room,
                ErrorCode.TIMEOUT,
                f"handler took over {timed_out}s",
                msg.event,
                ref,
            )
        if error is None:
            return [] if ref is None else [self._reply(member, msg.room, ref, value)]
        if not isinstance(error, Exception):
            if ref is None:
                return []
            # Cancelled with its connection: the request is still answered,
            # on the session's queue.
            return self._error(
                member,
                msg.room,
                ErrorCode.CANCELLED,
                "the handler was cancelled when the connection closed",
                msg.event,
                ref,
            )
        self.metrics.handler_errors += 1
        # Only RequestError texts are meant for clients; others may leak internals.
        text = str(error) if isinstance(error, RequestError) else "the handler failed"
        code = error.code if isinstance(error, RequestError) else ErrorCode.HANDLER_ERROR
        return self._error(member, msg.room, code, text, msg.event, ref)

    def replied(self, member: M, room: str, ref: str | None) -> list[Effect]:
        """The answer to a request that succeeded without a value (a join, a leave)."""
        return [] if ref is None else [self._reply(member, room, ref, None)]

    # -- joins and leaves ----------------------------------------------------------

    def join_refusal(self, member: M, name: str) -> str | None:
        """Why ``member`` may not join ``name`` (before ``authorize_join``), or ``None``."""
        if not name:
            return "empty room name"
        rooms = member.memberships
        if name not in rooms and len(rooms) >= self.settings.max_rooms_per_connection:
            return f"already in {len(rooms)} rooms"
        return None

    def room_full(self, member: M, name: str) -> bool:
        """Whether joining ``name`` would take ``member`` over ``max_members_per_room``."""
        if name == ROOT:
            return False
        room = self._rooms.get(name)
        return (
            room is not None
            and member.id not in room.members
            and len(room.members) >= self.settings.max_members_per_room
        )

    def is_member(self, member: M, name: str) -> bool:
        room = self._rooms.get(name)
        return room is not None and member.id in room.members

    def refuse_join(self, member: M, name: str, reason: str, ref: str | None) -> list[Effect]:
        """A join was refused: counted, logged at a bounded rate, told to extended clients."""
        self.metrics.frames_dropped["join_refused"] += 1
        # Bounded: a client can have joins refused as fast as it sends them.
        self.drop_log.log(
            logging.INFO,
            "join_refused",
            "join refused: %s",
            reason,
            extra={"conn_id": member.id, "room": name},
        )
        return self._error(member, name, ErrorCode.JOIN_REFUSED, reason, "join", ref)

    def member_list_cap(self, name: str) -> int:
        """At most this many IDs besides the joiner's in a ``join_ack`` of ``name``."""
        settings = self.settings
        limit = settings.root_member_list_limit if name == ROOT else settings.member_list_limit
        return max(limit - 1, 0)

    def remote_ids_wanted(self, member: M, name: str) -> int:
        """How many IDs of members on other nodes the ``join_ack`` of ``name`` has room for."""
        if not self.distributed or self.is_member(member, name):
            return 0
        cap = self.member_list_cap(name)
        room = self._rooms.get(name)
        if room is None:
            return cap
        room.encoded_members(cap)
        return max(cap - room.member_list_size, 0)

    def join(
        self, member: M, name: str, *, remote: Iterable[str] = ()
    ) -> tuple[bool, list[Effect]]:
        """``member`` joins ``name``: ``(new, effects)``.

        The effects are the ``join_ack`` (the joiner first, then up to the
        cap of the others, local ones in join order and then ``remote``), the
        ``new_member`` notice (a request's answer comes after the join hooks:
        :meth:`replied`). A repeated join gets
        the joiner alone in its list: the client has the list already, kept
        current by the notices, and joining again must not be a way to have
        it sent over and over.
        """
        room = self._rooms.get(name)
        new = room is None or member.id not in room.members
        own = member_list_payload((member.id,))
        if new:
            cap = self.member_list_cap(name)
            parts: list[bytes | memoryview] = [own[:-1]]
            if room is None:
                room = self._rooms[name] = Room(name)
            else:
                others = room.encoded_members(cap)
                if room.member_list_size:
                    parts += (b",", memoryview(others)[1:-1])
            if remote:
                wanted = cap - room.member_list_size
                listed = list(remote)[: max(wanted, 0)]
                if listed:
                    parts += (b",", member_list_payload(listed)[1:-1])
            parts.append(b"]")
            member_list = b"".join(parts)
            room.add(member.id, member)
            member.memberships[name] = None
        else:
            member_list = own
        assert room is not None
        effects: list[Effect] = [
            Deliver(member, binary_frame(encode(name, "join_ack", "", member.id, member_list)))
        ]
        notify = name != ROOT or self.settings.root_notices
        if new and notify and (len(room.members) > 1 or self.distributed):
            notice = encode(name, "new_member", "", "", member.id.encode())
            effects.append(Fanout(name, room, notice, binary_frame(notice), member.id, count=False))
        return new, effects

    def leave(self, member: M, name: str) -> tuple[bool, list[Effect]]:
        """``member`` leaves ``name``: ``(left, effects)``; the others get ``member_left``."""
        member.memberships.pop(name, None)
        room = self._rooms.get(name)
        if room is None or member.id not in room.members:
            return False, []
        room.remove(member.id)
        members = room.members
        if not members:
            del self._rooms[name]
        if (members or self.distributed) and (name != ROOT or self.settings.root_notices):
            notice = encode(name, "member_left", "", "", member.id.encode())
            return True, [
                Fanout(
                    name, room if members else None, notice, binary_frame(notice), "", count=False
                )
            ]
        return True, []

    def leave_ack(self, member: M, name: str) -> Deliver[M]:
        """The answer to a ``leave`` (a request's reply comes after the leave hooks)."""
        ack = encode(name, "leave_ack", "", member.id, member.id.encode())
        return Deliver(member, binary_frame(ack))

    # -- from the application and from other nodes -------------------------------------

    def broadcast(
        self, name: str, event: str, payload: bytes, *, exclude: str = "", src: str = ""
    ) -> Fanout[M]:
        """An event from the application (or another node) to the members of ``name``."""
        message = encode(name, event, "", src, payload)
        return Fanout(name, self._rooms.get(name), message, binary_frame(message), exclude)

    def send_to(
        self, conn_id: str, event: str, payload: bytes, *, room: str = ROOT, src: str = ""
    ) -> Direct[M]:
        """An event from the application to one connection, on any node."""
        message = encode(room, event, conn_id, src, payload)
        target = self._members.get(conn_id)
        return Direct(None, target, conn_id, message, binary_frame(message), room, event, None)
