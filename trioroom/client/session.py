"""The client's session, sans-I/O: what the client knows, and what each frame means.

A :class:`Session` is the state of one wsrooms session as the client sees it:
its connection ID, its rooms and their members (:class:`Membership`), the
frames that wait for an answer (:class:`Pending`), how many numbered frames
came in and how many of them the server was told about (acknowledgements),
and what to send again after a resume. It does no I/O, imports no trio and
reads no clock; the trio layer (:mod:`trioroom.client.client`):

* feeds it every frame with :meth:`Session.receive` and acts on the events it
  returns (:class:`Deliver`, :class:`Send`, :class:`Report`, :class:`Opened`);
* writes the :class:`Outgoing` frames its methods return;
* passes the time in where a deadline matters (:meth:`Pending.start_clock`,
  :meth:`Session.expire`).

Waiting is the I/O layer's business too: a :class:`Membership` or a
:class:`Pending` calls the plain callables registered on it after each change
(the trio layer registers ``trio.Event.set``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict, deque
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

from ..codes import ROOT
from ..exceptions import ClientError, ConnectionClosed, RequestFailed, ServerError
from ..extension import ERROR, NOT_RESUMED, REPLY, RESUMED, SESSION, UNNUMBERED, request_ref
from ..protocol import FrameError, Message, encode
from .membership import Membership, State
from .pending import Kind, Outgoing, Pending

__all__ = [
    "NOTICES",
    "Deliver",
    "Event",
    "Incoming",
    "Opened",
    "Report",
    "Send",
    "Session",
    "SessionLost",
    "decode",
    "error_of",
    "json_object",
    "loads",
    "member_ids",
    "resume_offer",
    "resume_url",
]

logger = logging.getLogger("trioroom.client")

#: The I/O layer's object for a room (the trio layer's ``Inbox``).
R = TypeVar("R")

#: Membership notices: they update :meth:`Membership.members` and never reach a room's queue.
NOTICES = frozenset({"new_member", "member_left"})
#: Bytes of an unparsable ``trioroom.error`` payload kept as its message.
_RAW_ERROR_LIMIT = 200


@attrs.frozen
class SessionLost:
    """The session could not be resumed: the client now has a new one.

    Given to the handler registered with :meth:`Client.on_session_lost`.
    Messages sent to the old session while the client was away are lost,
    and the other members saw ``old_id`` leave and ``new_id`` join.

    Attributes:
        reason: The server's reason: ``expired`` (the resume window passed),
            ``buffer_overflow``, ``unknown_token`` (no node of the cluster
            knows it: for example the servers restarted), ``node_lost`` (the
            node that held the session died, and its frames with it),
            ``unavailable`` (the server reached could not ask the others:
            its Redis was away), ``identity_mismatch``, ``closed``,
            ``server_shutdown``, ``bad_request``.
        old_id: The connection ID of the lost session.
        new_id: The new connection ID (now :attr:`Room.id`).
        rooms: The rooms the client is joining again (besides ``root``).
            One the server refuses ends like a room closed by the server
            and is reported to :meth:`Client.on_error` as ``join_refused``.
    """

    reason: str
    old_id: str
    new_id: str
    rooms: tuple[str, ...]


# -- what a frame from the server means ---------------------------------------------------


@attrs.frozen
class Deliver(Generic[R]):
    """A message of a joined room: for its handler, or (unless a ``notice``) its queue."""

    room: Membership[R]
    msg: Message
    notice: bool


@attrs.frozen
class Send:
    """A control frame to queue now (the leave that answers a cancelled join)."""

    out: Outgoing


@attrs.frozen
class Report:
    """An error that answers no request: for :meth:`Client.on_error`, or the log."""

    error: ServerError


@attrs.frozen
class Opened:
    """The socket's opening frames are in: the session goes on on it.

    Attributes:
        resumed: The server resumed the session (``probe`` then tells which
            frames it never got, see :meth:`Session.probe_answered`).
        not_resumed: Why the server did not resume it (``kicked``: the
            session is over, do not come back as someone new).
        lost: The lost session, when a new one replaced it.
        preamble: Frames to write before anything queued (the joins again).
        probe: After a resume, the request to write first, if any.
    """

    resumed: bool = False
    not_resumed: str | None = None
    lost: SessionLost | None = None
    preamble: tuple[Outgoing, ...] = ()
    probe: Pending | None = None


Event = Deliver[Any] | Send | Report | Opened


class Incoming:
    """What one frame from the server means: ``events`` to act on, in order.

    ``numbered`` frames are counted with :meth:`Session.count` once handled:
    one interrupted by the socket's end is not counted, so the server replays it.
    """

    __slots__ = ("events", "numbered")

    def __init__(self, events: list[Event], numbered: bool) -> None:
        self.events = events
        self.numbered = numbered


# -- the session ------------------------------------------------------------------------------


class Session(Generic[R]):
    """The state of a client's session, and the rules that change it (sans-I/O).

    ``root`` is the membership of the room ``root``, joined once the first
    socket opened. ``ack_every``: acknowledge after this many numbered frames.
    """

    def __init__(self, root: Membership[R], *, ack_every: int = 64) -> None:
        if ack_every < 1:
            raise ValueError("ack_every must be at least 1")
        self.root = root
        #: This client's connection ID (the ``src`` of the root ``join_ack``); "" until then.
        self.id = ""
        #: ``True`` when the server selected ``trioroom.v1`` on the current socket.
        self.extended = False
        #: The resume token of ``trioroom.session`` (``None``: the session cannot be resumed).
        self.token: str | None = None
        #: How long the server keeps the session after a drop, in seconds.
        self.resume_window = 0.0
        #: Numbered frames received and handled: the replay position (``last=`` of a resume).
        self.received = 0
        #: The count last acknowledged to the server.
        self.acked = 0
        #: How many times the session was resumed after a dropped connection.
        self.resumes = 0
        #: Every :class:`SessionLost` so far, oldest first.
        self.losses: list[SessionLost] = []
        #: Frames waiting for their answer, by ref.
        self.pending: dict[str, Pending] = {}
        #: The rooms joined or being joined, by name (``root`` included).
        self.rooms: dict[str, Membership[R]] = {ROOT: root}
        #: Rooms being left, by name, in the order of their leaves (``leave_ack``\\ s come so).
        self.leaving: defaultdict[str, deque[Membership[Any]]] = defaultdict(deque)
        #: Generation of the current socket (see :attr:`Pending.written`).
        self.generation = 0
        self._ack_every = ack_every
        self._ack_queued = False
        self._seq = 0
        # Joins cancelled before their join_ack: room name -> how many.
        self._cancelled_joins: defaultdict[str, int] = defaultdict(int)
        # While a socket opens: is it a resume, and the not_resumed reason.
        self._opening = False
        self._resuming = False
        self._not_resumed: str | None = None
        self._old_id = ""

    def __repr__(self) -> str:
        return f"<Session {self.id or '(opening)'} received={self.received} acked={self.acked}>"

    @property
    def resumable(self) -> bool:
        """The server offered to keep the session after a drop."""
        return self.extended and self.token is not None

    def resume_url(self, url: str) -> str:
        """``url`` with ``resume=<token>&last=<received>``: where to resume the session."""
        if self.token is None:
            raise RuntimeError("the session has no resume token")
        return resume_url(url, self.token, self.received)

    # -- frames the client sends ----------------------------------------------------------

    def data(self, room: str, event: str, dst: str, payload: bytes) -> Outgoing:
        """A custom event for ``room`` (or for ``dst`` in it)."""
        return Outgoing(encode(room, event, dst, self.id, payload), data=True)

    def join(self, room: Membership[R]) -> Outgoing:
        """Join ``room`` (a new membership): it is one of :attr:`rooms` from now on."""
        name = room.name
        if self.extended:
            pending = self._new_pending(Kind.JOIN, room, "join")
            room.join_ref = pending.ref
            out = pending.outgoing()
        else:
            out = Outgoing(encode(name, "join", "", "", b""))
        self.rooms[name] = room
        # A late join_ack of an earlier cancelled join now answers this one.
        self._cancelled_joins.pop(name, None)
        return out

    def abandon_join(self, room: Membership[R]) -> None:
        """Every caller of a join gave up before its ``join_ack``: forget the room.

        Its late ``join_ack`` (extended: the join's reply) is answered with a leave.
        """
        name = room.name
        if room.state is not State.JOINING or self.rooms.get(name) is not room:
            return
        del self.rooms[name]
        room.set_state(State.CLOSED)
        self._cancelled_joins[name] += 1

    def leave(self, room: Membership[R]) -> Outgoing:
        """Leave a joined room: it is leaving until its ``leave_ack``."""
        name = room.name
        own = self.id
        if self.extended:
            pending = self._new_pending(Kind.LEAVE, room, "leave", dst=own, payload=own.encode())
            out = pending.outgoing()
        else:
            out = Outgoing(encode(name, "leave", own, own, own.encode()))
        self.leaving[name].append(room)
        if self.rooms.get(name) is room:
            del self.rooms[name]
        room.set_state(State.LEAVING)
        return out

    def request(
        self, room: Membership[R], event: str, dst: str, payload: bytes, timeout: float | None
    ) -> Pending:
        """A custom event that asks for an answer; send ``pending.outgoing(data=True)``."""
        return self._new_pending(
            Kind.REQUEST, room, event, dst=dst, payload=payload, timeout=timeout
        )

    def forget(self, pending: Pending) -> None:
        """Nobody waits for ``pending`` any more: its answer, if it comes, is dropped."""
        if self.pending.get(pending.ref) is pending:
            del self.pending[pending.ref]

    def expire(self, now: float) -> list[Pending]:
        """Fail with ``timeout`` every request whose deadline is ``now`` or earlier."""
        expired = [
            pending
            for pending in self.pending.values()
            if pending.kind is Kind.REQUEST and pending.deadline <= now
        ]
        for pending in expired:
            del self.pending[pending.ref]
            pending.settle(
                RequestFailed(
                    "timeout",
                    f"no answer within {pending.timeout:g}s",
                    event=pending.event,
                    room=pending.room.name,
                )
            )
        return expired

    def _new_pending(
        self,
        kind: Kind,
        room: Membership[Any],
        event: str,
        *,
        dst: str = "",
        payload: bytes = b"",
        timeout: float | None = None,
    ) -> Pending:
        self._seq += 1
        name = "" if kind is Kind.PROBE else room.name
        frame = encode(name, event, dst, f"?{self._seq}", payload)
        pending = Pending(kind, self._seq, frame, room, event, timeout)
        self.pending[pending.ref] = pending
        return pending

    # -- acknowledgements -----------------------------------------------------------------

    def count(self) -> bool:
        """One more numbered frame was handled; ``True``: queue an acknowledgement now.

        Until the writer reaches it (:meth:`take_ack`) no other is asked for.
        """
        if not self.extended:
            return False
        self.received += 1
        if (
            self.token is not None
            and not self._ack_queued
            and self.received - self.acked >= self._ack_every
        ):
            self._ack_queued = True
            return True
        return False

    def ack_interval_passed(self) -> bool:
        """The ack interval passed; ``True``: queue an acknowledgement now."""
        if self.received > self.acked and not self._ack_queued:
            self._ack_queued = True
            return True
        return False

    def take_ack(self) -> int | None:
        """The writer reached a queued acknowledgement: the count to send, if one is needed.

        Write :func:`ack_frame` of it, then call :meth:`acknowledged`.
        """
        self._ack_queued = False
        if self.received <= self.acked or self.token is None:
            return None
        return self.received

    def acknowledged(self, count: int) -> None:
        self.acked = count

    # -- sockets ----------------------------------------------------------------------------

    def start_socket(self, *, extended: bool, resuming: bool) -> None:
        """A new socket is up (``resuming``: opened with :meth:`resume_url`).

        Its opening frames follow, up to the root ``join_ack`` or
        ``trioroom.resumed``; :meth:`receive` returns :class:`Opened` then.
        """
        self.extended = extended
        self.generation += 1
        self._opening = True
        self._resuming = resuming
        self._not_resumed = None
        self._old_id = self.id

    def probe_answered(self, generation: int) -> list[Outgoing]:
        """The probe of :class:`Opened` was answered (or not in time): what to write again.

        Frames written on the lost socket may not have reached the server.
        The server answers in order, and everything it sent before the
        resume comes first, so once the probe (a leave of the room ``""``,
        which no client can be in) is answered, tracked frames still
        unanswered were never received: they go out again, oldest first,
        before anything newer. Untracked frames (``send``) are not sent again.
        """
        missed = sorted(
            (
                pending
                for pending in self.pending.values()
                if pending.kind is not Kind.PROBE
                and pending.written is not None
                and pending.written < generation
            ),
            key=lambda pending: pending.seq,
        )
        if missed:
            logger.info("sending %d frames again: the server missed them", len(missed))
        for pending in missed:
            pending.written = None  # queued again, first
        return [pending.outgoing() for pending in missed]

    def writing(self, ref: str | None) -> Pending | None:
        """The writer writes the frame of ``ref`` on the current socket."""
        pending = self.pending.get(ref) if ref is not None else None
        if pending is not None:
            pending.written = self.generation
        return pending

    def end(self, error: ConnectionClosed | None, reason: ConnectionClosed) -> None:
        """The connection ended for good: every room closes, every pending fails with ``reason``.

        ``error`` is what the rooms' readers get (``None`` when the client closed it).
        """
        rooms: list[Membership[Any]] = list(self.rooms.values())
        for queue in self.leaving.values():
            rooms.extend(queue)
        self.leaving.clear()
        for room in rooms:
            room.end(error)
        pending = list(self.pending.values())
        self.pending.clear()
        for item in pending:
            item.settle(reason)

    # -- frames the server sends --------------------------------------------------------------

    def receive(self, data: bytes | str) -> Incoming:
        """One frame from the server: what it means."""
        msg = decode(data)
        if msg is None:
            return Incoming([], numbered=True)
        event = msg.event
        if self.extended and event in UNNUMBERED:
            if self._opening:
                return Incoming(self._opening_frame(msg), numbered=False)
            logger.warning("unexpected %s in the middle of a session: ignored", event)
            return Incoming([], numbered=False)
        if self._opening and event == "join_ack" and msg.room == ROOT:
            if self._resuming and self._not_resumed is None:
                # Neither resumed nor not_resumed: a new session all the same.
                self._not_resumed = "unknown"
                self.received = self.acked = 0
            events = self._on_join_ack(msg)
            events.append(self._opened())
            return Incoming(events, numbered=True)
        return Incoming(self._dispatch(msg), numbered=True)

    def _opening_frame(self, msg: Message) -> list[Event]:
        event = msg.event
        body = json_object(msg.payload)
        if event == SESSION:
            offer = resume_offer(body)
            self.token = offer[0] if offer is not None else None
            if offer is not None:
                self.resume_window = offer[1]
        elif event == RESUMED and self._resuming and self._not_resumed is None:
            self._opening = False
            self.resumes += 1
            return [Opened(resumed=True, probe=self._probe())]
        elif event == NOT_RESUMED and self._resuming:
            reason = body.get("reason")
            self._not_resumed = reason if isinstance(reason, str) and reason else "unknown"
            self.token = None
            self.received = self.acked = 0
        else:
            logger.warning("unexpected %s from the server: ignored", event)
        return []

    def _opened(self) -> Opened:
        self._opening = False
        reason = self._not_resumed
        if reason is None:
            return Opened()
        if reason == "kicked":
            # Removed by the server while away: do not come back as someone new.
            self.id = self._old_id
            return Opened(not_resumed=reason)
        lost, preamble = self._restart(reason)
        return Opened(not_resumed=reason, lost=lost, preamble=tuple(preamble))

    def _restart(self, reason: str) -> tuple[SessionLost, list[Outgoing]]:
        """The server could not resume the session and opened a new one: catch up.

        Calls whose frames went out on the old session get no answer any
        more. The rooms are joined again, before anything still queued goes
        out.
        """
        logger.warning("session %s not resumed (%s): now %s", self._old_id, reason, self.id)
        for ref, pending in list(self.pending.items()):
            if pending.written is None:
                continue  # still queued: it goes out on the new session
            del self.pending[ref]
            if pending.kind is Kind.REQUEST:
                pending.settle(
                    RequestFailed(
                        "session_lost",
                        f"the session was lost ({reason}) before the answer came",
                        event=pending.event,
                        room=pending.room.name,
                    )
                )
            elif pending.kind is Kind.LEAVE:
                # The old session's memberships are gone with it.
                self._complete_leave(pending.room)
            # Joins: joined again below (a cancelled one needs nothing: the
            # membership went with the session). Probes: not needed any more.
        preamble: list[Outgoing] = []
        names: list[str] = []
        for name, room in self.rooms.items():
            if room is self.root:
                continue
            if room.state is State.JOINING:
                join = self.pending.get(room.join_ref or "")
                if join is not None and join.written is None:
                    continue  # its join is still queued
            elif room.state is not State.JOINED:
                continue
            pending = self._new_pending(Kind.REJOIN, room, "join")
            room.join_ref = pending.ref
            preamble.append(pending.outgoing())
            names.append(name)
        lost = SessionLost(reason, self._old_id, self.id, tuple(names))
        self.losses.append(lost)
        return lost, preamble

    def _complete_leave(self, room: Membership[Any]) -> None:
        queue = self.leaving.get(room.name)
        if queue is not None and room in queue:
            queue.remove(room)
            if not queue:
                del self.leaving[room.name]
        room.set_state(State.LEFT)

    def _probe(self) -> Pending | None:
        """After a resume: the request that tells which tracked frames the server never got."""
        for ref, pending in list(self.pending.items()):
            if pending.kind is Kind.PROBE:
                del self.pending[ref]
        if not any(pending.written is not None for pending in self.pending.values()):
            return None
        return self._new_pending(Kind.PROBE, self.root, "leave")

    def _dispatch(self, msg: Message) -> list[Event]:
        event = msg.event
        if event == "join_ack":
            return self._on_join_ack(msg)
        if event == "leave_ack":
            self._on_leave_ack(msg.room)
            return []
        if self.extended and not msg.src and event in (REPLY, ERROR):
            return self._on_answer(msg)
        room = self.rooms.get(msg.room)
        if room is None or room.state is not State.JOINED:
            logger.debug("dropped %r for room %r: not joined", event, msg.room)
            return []
        notice = event in NOTICES
        if notice:
            try:
                room.notice(event, msg.text)
            except UnicodeDecodeError:
                logger.warning("dropped %r with a non-UTF-8 member ID", event)
                return []
        return [Deliver(room, msg, notice)]

    def _on_join_ack(self, msg: Message) -> list[Event]:
        name = msg.room
        if name == ROOT or not self.id:
            self.id = msg.src  # a root join_ack opens a session
        ids = member_ids(msg)  # a bad list is logged even for a room we do not wait for
        room = self.rooms.get(name)
        if room is not None:
            room.set_members(ids)
            if room.state is State.JOINING:
                room.set_state(State.JOINED)
            return []
        if self.extended:
            return []  # a cancelled join: its reply, which follows, decides (_on_answer)
        if not self._cancelled_joins.get(name):
            return []
        self._cancelled_joins[name] -= 1
        if not self._cancelled_joins[name]:
            del self._cancelled_joins[name]
        logger.debug("join of %r was cancelled: leaving it", name)
        own = self.id
        return [Send(Outgoing(encode(name, "leave", own, own, own.encode())))]

    def _on_leave_ack(self, name: str) -> None:
        # leave_acks answer our leaves in order; one with no leave pending
        # means the server removed us (Server.close_room).
        queue = self.leaving.get(name)
        room: Membership[Any]
        if queue:
            room = queue.popleft()
            if not queue:
                del self.leaving[name]
        else:
            joined = self.rooms.get(name)
            if joined is None or joined.state is not State.JOINED or joined is self.root:
                return
            logger.debug("removed from room %r by the server", name)
            del self.rooms[name]
            room = joined
        room.set_state(State.LEFT)

    def _on_answer(self, msg: Message) -> list[Event]:
        """A ``trioroom.reply`` or ``trioroom.error``."""
        ref = request_ref(msg.dst)
        error = error_of(msg) if msg.event == ERROR else None
        pending = self.pending.pop(ref, None) if ref is not None else None
        if pending is None:
            if error is not None and ref is None:
                return [Report(error)]
            logger.debug("dropped the answer to %r: nobody waits for it", msg.dst)
            return []
        events: list[Event] = []
        result: bytes | ClientError | None = None
        kind = pending.kind
        if kind is Kind.REQUEST:
            if error is None:
                result = msg.payload
            else:
                result = RequestFailed(
                    error.code, error.message, event=error.event or pending.event, room=msg.room
                )
        elif kind is Kind.JOIN or kind is Kind.REJOIN:
            room = pending.room
            if error is not None:
                events = self._join_refused(pending, error)
            elif room.state is State.CLOSED and room.name not in self.rooms:
                # Every caller gave up before the join_ack: leave it again.
                events = self._leave_cancelled_join(room.name)
        pending.settle(result)
        return events

    def _leave_cancelled_join(self, name: str) -> list[Event]:
        logger.debug("join of %r was cancelled: leaving it", name)
        own = self.id
        stand_in: Membership[Any] = Membership(name)  # its leave_ack pairs with this leave
        stand_in.set_state(State.LEAVING)
        pending = self._new_pending(Kind.LEAVE, stand_in, "leave", dst=own, payload=own.encode())
        self.leaving[name].append(stand_in)
        return [Send(pending.outgoing())]

    def _join_refused(self, pending: Pending, error: ServerError) -> list[Event]:
        room = pending.room
        name = room.name
        current = self.rooms.get(name) is room
        if current and room.state is State.JOINING:
            del self.rooms[name]
            room.remove(RequestFailed(error.code, error.message, event="join", room=name))
        elif current and room.state is State.JOINED and pending.kind is Kind.REJOIN:
            # Not joined again after a lost session: the room ends.
            logger.warning("room %r not joined again after a lost session: %s", name, error)
            del self.rooms[name]
            room.remove()
            return [Report(error)]
        return []


# -- decoding ---------------------------------------------------------------------------------


def resume_offer(body: dict[str, Any]) -> tuple[str, float] | None:
    """The resume token and window of a ``trioroom.session`` (``None``: unusable; logged)."""
    token = body.get("token")
    window = body.get("resume_window")
    if isinstance(token, str) and token and isinstance(window, int | float) and window > 0:
        return token, float(window)
    logger.warning("trioroom.session without a usable token: no resumption")
    return None


def resume_url(url: str, token: str, last: int) -> str:
    """``url`` with ``resume=<token>&last=<last>``; other parameters kept as they are."""
    parts = urlsplit(url)
    kept = [
        item
        for item in parts.query.split("&")
        if item and item.partition("=")[0] not in ("resume", "last")
    ]
    kept += [f"resume={token}", f"last={last}"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))


def member_ids(msg: Message) -> list[str]:
    """The member list of a ``join_ack`` (just its ``src`` if the list is bad; logged)."""
    try:
        ids = loads(msg.payload)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("not a list of strings")
    except ValueError as exc:
        name = msg.room
        logger.warning("join_ack of %r has a bad member list: %s", name, exc, extra={"room": name})
        return [msg.src]
    return ids


def decode(data: bytes | str) -> Message | None:
    """The message of a frame from the server; ``None`` (logged) if it is malformed."""
    if isinstance(data, str):
        data = data.encode()
    try:
        return Message.decode(data)
    except FrameError as exc:
        logger.warning("dropped a frame from the server: %s", exc)
        return None


def loads(payload: bytes) -> Any:
    """``json.loads`` that raises ``ValueError`` for every payload it cannot parse.

    A server can nest arrays deep enough to exhaust the parser's recursion
    limit: that is bad JSON like any other, not a reason to end the client.
    """
    try:
        return json.loads(payload)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def json_object(payload: bytes) -> dict[str, Any]:
    """The JSON object of ``payload``; empty if it is anything else."""
    try:
        value = loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def error_of(msg: Message) -> ServerError:
    """The :class:`ServerError` of a ``trioroom.error`` frame (never raises)."""
    body = json_object(msg.payload)
    code = body.get("code")
    message = body.get("message")
    event = body.get("event")
    if not body:
        # Unparsable: show its start only, since it can be as large as a frame
        # may be and ends up in a log line when nobody handles errors.
        message = msg.payload[:_RAW_ERROR_LIMIT].decode(errors="replace")
        if len(msg.payload) > _RAW_ERROR_LIMIT:
            message += f"... ({len(msg.payload)} bytes)"
    return ServerError(
        code if isinstance(code, str) and code else "unknown",
        message if isinstance(message, str) else "",
        event=event if isinstance(event, str) else "",
        room=msg.room,
    )
