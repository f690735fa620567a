"""The client's sans-I/O session core, on its own: frames in, events and frames out.

No event loop and no network here: each test builds a :class:`Session`, feeds
it the frames a server would send (as bytes), writes nothing, and checks what
the session decided. Time is a number the test passes in.
"""

from __future__ import annotations

import random

import pytest

from trioroom.client.backoff import Backoff
from trioroom.client.membership import Membership, State
from trioroom.client.pending import Kind, Outgoing, Pending, ack_frame
from trioroom.client.session import (
    Deliver,
    Event,
    Opened,
    Report,
    Send,
    Session,
    SessionLost,
    resume_url,
)
from trioroom.codes import ROOT
from trioroom.exceptions import ConnectionClosed, RequestFailed
from trioroom.extension import ACK, ERROR, NOT_RESUMED, REPLY, RESUMED, SESSION
from trioroom.protocol import Message, encode

ME = "me"
SESSION_BODY = b'{"token":"tok","resume_window":30}'


def frame(room: str, event: str, *, dst: str = "", src: str = "", payload: bytes = b"") -> bytes:
    return encode(room, event, dst, src, payload)


def feed(session: Session[object], data: bytes) -> list[Event]:
    """What the I/O layer does with a frame: take the events, count it once handled."""
    incoming = session.receive(data)
    if incoming.numbered:
        session.count()
    return incoming.events


def open_session(
    *, extended: bool = True, ack_every: int = 64, token: bool = True
) -> Session[object]:
    """A session whose first socket opened: ``trioroom.session`` (extended), root ``join_ack``."""
    session: Session[object] = Session(Membership(ROOT), ack_every=ack_every)
    session.start_socket(extended=extended, resuming=False)
    if extended:
        body = SESSION_BODY if token else b"{}"
        assert feed(session, frame(ROOT, SESSION, payload=body)) == []
    events = feed(session, frame(ROOT, "join_ack", src=ME, payload=b'["me", "other"]'))
    assert events == [Opened()]
    return session


def reply(ref: str, payload: bytes = b"", room: str = ROOT) -> bytes:
    return frame(room, REPLY, dst=f"?{ref}", payload=payload)


def error(ref: str | None, code: str, room: str = ROOT, event: str = "") -> bytes:
    body = f'{{"code":"{code}","message":"no","event":"{event}"}}'.encode()
    return frame(room, ERROR, dst=f"?{ref}" if ref else "", payload=body)


def joined(session: Session[object], name: str, members: bytes = b'["me"]') -> Membership[object]:
    """Join ``name`` the way the server answers: join_ack, then (extended) the reply."""
    room: Membership[object] = Membership(name)
    out = session.join(room)
    session.writing(out.ref)
    assert feed(session, frame(name, "join_ack", src=ME, payload=members)) == []
    if out.ref is not None:
        assert feed(session, reply(out.ref, room=name)) == []
    assert room.state is State.JOINED
    return room


def fields(out: Outgoing) -> tuple[str, str, str, str, bytes]:
    msg = Message.decode(out.frame)
    return msg.room, msg.event, msg.dst, msg.src, msg.payload


def resume(session: Session[object], *opening: bytes) -> Opened:
    """A new socket with the resume URL; the server's opening frames; returns the Opened."""
    session.start_socket(extended=True, resuming=True)
    events: list[Event] = []
    for data in opening:
        events += feed(session, data)
    (opened,) = [event for event in events if isinstance(event, Opened)]
    return opened


# -- the first socket -----------------------------------------------------------------------------


def test_the_root_join_ack_gives_the_id_and_the_root_members() -> None:
    session = open_session()
    assert session.id == ME and session.root.state is State.JOINED
    assert session.root.members() == ["me", "other"]
    assert session.token == "tok" and session.resume_window == 30.0 and session.resumable


@pytest.mark.parametrize("body", [b"{}", b'{"token":"t","resume_window":0}', b"not json"])
def test_a_session_offer_without_a_usable_token_means_no_resumption(body: bytes) -> None:
    session: Session[object] = Session(Membership(ROOT))
    session.start_socket(extended=True, resuming=False)
    feed(session, frame(ROOT, SESSION, payload=body))
    feed(session, frame(ROOT, "join_ack", src=ME, payload=b'["me"]'))
    assert session.token is None and not session.resumable


def test_a_bad_member_list_keeps_only_the_joiner() -> None:
    session: Session[object] = Session(Membership(ROOT))
    session.start_socket(extended=False, resuming=False)
    feed(session, frame(ROOT, "join_ack", src=ME, payload=b"[" * 100_000 + b"]" * 100_000))
    assert session.root.members() == [ME]


# -- numbering and acknowledgements ---------------------------------------------------------------


def test_frames_are_counted_once_handled_and_unnumbered_ones_are_not() -> None:
    session = open_session()
    assert session.received == 1  # the root join_ack; trioroom.session is not numbered
    incoming = session.receive(frame(ROOT, "chat", src="other"))
    assert incoming.numbered and session.received == 1  # not handled yet
    session.count()
    assert session.received == 2
    # A malformed frame was numbered by the server all the same.
    assert session.receive(b"\x00\x00\x00").numbered
    # Socket-level frames in the middle of a session: ignored, not counted.
    assert not session.receive(frame(ROOT, SESSION, payload=SESSION_BODY)).numbered


def test_a_plain_connection_counts_nothing_and_never_acknowledges() -> None:
    session = open_session(extended=False)
    for _ in range(100):
        feed(session, frame(ROOT, "chat", src="other"))
    assert session.received == 0 and not session.ack_interval_passed()


def test_an_ack_is_due_every_ack_every_frames_and_asked_for_once() -> None:
    session = open_session(ack_every=3)  # received: 1
    assert not session.count()  # 2
    assert session.count()  # 3: due
    assert not session.count() and not session.count()  # 5: already queued
    assert not session.ack_interval_passed()  # queued already
    count = session.take_ack()  # the writer reaches it: it acknowledges all 5
    assert count == 5
    session.acknowledged(count)
    assert session.acked == 5
    assert Message.decode(ack_frame(5)) == Message(ROOT, ACK, "", "", b"5")
    assert not session.count() and not session.count()  # 6, 7
    assert session.count()  # 8: three since the last ack, due again


def test_the_ack_interval_asks_for_an_ack_only_when_something_is_unacknowledged() -> None:
    session = open_session()
    assert session.ack_interval_passed()  # the root join_ack
    session.acknowledged(session.take_ack() or 0)
    assert not session.ack_interval_passed()
    feed(session, frame(ROOT, "chat", src="other"))
    assert session.ack_interval_passed()


def test_a_session_without_a_token_is_never_acknowledged() -> None:
    session = open_session(token=False, ack_every=1)
    assert not session.count()
    assert session.take_ack() is None


def test_pending_refs_are_numbered_in_order_and_sent_as_src() -> None:
    session = open_session()
    lobby = joined(session, "lobby")  # ?1
    first = session.request(lobby, "ask", "", b"x", timeout=None)
    second = session.request(session.root, "ask", "peer", b"y", timeout=None)
    assert (first.ref, second.ref) == ("2", "3")
    assert fields(first.outgoing(data=True)) == ("lobby", "ask", "", "?2", b"x")
    assert fields(second.outgoing()) == (ROOT, "ask", "peer", "?3", b"y")
    assert first.outgoing(data=True).data and not second.outgoing().data
    plain = session.data("lobby", "chat", "", b"hi")
    assert fields(plain) == ("lobby", "chat", "", ME, b"hi") and plain.data and not plain.ref


# -- the replay position and resume URL -----------------------------------------------------------


def test_the_resume_url_carries_the_token_and_the_replay_position() -> None:
    session = open_session()
    for _ in range(4):
        feed(session, frame(ROOT, "chat", src="other"))
    url = session.resume_url("wss://h:1/ws?auth=x&last=99&resume=old#f")
    assert url == "wss://h:1/ws?auth=x&resume=tok&last=5#f"
    assert resume_url("ws://h/ws", "t", 0) == "ws://h/ws?resume=t&last=0"


def test_a_resumed_session_keeps_its_counts_and_id() -> None:
    session = open_session()
    feed(session, frame(ROOT, "chat", src="other"))
    opened = resume(session, frame(ROOT, RESUMED, payload=b"{}"))
    assert opened.resumed and opened.probe is None  # nothing was written: nothing to probe
    assert (session.received, session.id, session.resumes) == (2, ME, 1)
    feed(session, frame(ROOT, "chat", src="other"))  # the replay goes on from 3
    assert session.received == 3


def test_not_resumed_starts_counting_again() -> None:
    session = open_session()
    feed(session, frame(ROOT, "chat", src="other"))
    opened = resume(
        session,
        frame(ROOT, NOT_RESUMED, payload=b'{"reason":"expired"}'),
        frame(ROOT, SESSION, payload=b'{"token":"new","resume_window":5}'),
        frame(ROOT, "join_ack", src="me2", payload=b'["me2"]'),
    )
    assert opened.not_resumed == "expired" and not opened.resumed
    assert (session.received, session.token, session.id) == (1, "new", "me2")
    assert session.losses == [SessionLost("expired", ME, "me2", ())]


def test_a_root_join_ack_without_resumed_is_a_new_session() -> None:
    session = open_session()
    opened = resume(session, frame(ROOT, "join_ack", src="me2", payload=b'["me2"]'))
    assert opened.not_resumed == "unknown" and opened.lost is not None
    assert session.received == 1


def test_kicked_while_away_keeps_the_old_id() -> None:
    session = open_session()
    opened = resume(
        session,
        frame(ROOT, NOT_RESUMED, payload=b'{"reason":"kicked"}'),
        frame(ROOT, "join_ack", src="someone-new", payload=b"[]"),
    )
    assert opened.not_resumed == "kicked" and opened.lost is None and not opened.preamble
    assert session.id == ME


# -- pending requests -----------------------------------------------------------------------------


def test_a_reply_settles_its_request_and_wakes_its_watchers() -> None:
    session = open_session()
    pending = session.request(session.root, "echo", "", b"x", timeout=None)
    woken: list[str] = []
    pending.watch(lambda: woken.append("a"))
    assert feed(session, reply(pending.ref, b"answer")) == []
    assert pending.done and pending.result == b"answer" and woken == ["a"]
    assert pending.ref not in session.pending
    pending.watch(lambda: woken.append("late"))  # already settled: at once
    assert woken == ["a", "late"]


def test_an_error_answer_fails_its_request() -> None:
    session = open_session()
    pending = session.request(session.root, "boom", "", b"", timeout=None)
    feed(session, error(pending.ref, "handler_error"))
    assert isinstance(pending.result, RequestFailed)
    assert (pending.result.code, pending.result.event, pending.result.room) == (
        "handler_error",
        "boom",  # the server did not say: the request's event
        ROOT,
    )


def test_an_error_that_answers_nothing_is_reported() -> None:
    session = open_session()
    (event,) = feed(session, error(None, "rate_limited", event="chat"))
    assert isinstance(event, Report) and (event.error.code, event.error.event) == (
        "rate_limited",
        "chat",
    )
    # An answer to a request nobody waits for any more is dropped, not reported.
    assert feed(session, error("77", "timeout")) == []
    assert feed(session, reply("78")) == []


def test_a_request_times_out_by_the_time_passed_in() -> None:
    session = open_session()
    pending = session.request(session.root, "slow", "", b"", timeout=2.5)
    forever = session.request(session.root, "slow", "", b"", timeout=None)
    assert pending.start_clock(100.0) == 102.5
    forever.start_clock(100.0)
    assert session.expire(102.4) == [] and not pending.done
    assert session.expire(102.5) == [pending]
    assert isinstance(pending.result, RequestFailed)
    assert (pending.result.code, pending.result.message) == ("timeout", "no answer within 2.5s")
    assert session.expire(1e9) == [] and not forever.done
    # Its answer comes late: nobody waits for it.
    assert feed(session, reply(pending.ref, b"late")) == []
    assert pending.result.code == "timeout"


def test_a_forgotten_request_drops_its_answer() -> None:
    session = open_session()
    pending = session.request(session.root, "ask", "", b"", timeout=None)
    session.forget(pending)
    feed(session, reply(pending.ref, b"x"))
    assert not pending.done and not session.pending


def test_the_end_of_the_connection_fails_everything_pending_and_closes_the_rooms() -> None:
    session = open_session()
    lobby = joined(session, "lobby")
    away: Membership[object] = Membership("away")
    session.join(away)  # still joining
    pending = session.request(lobby, "ask", "", b"", timeout=None)
    reason = ConnectionClosed(1011, "bye")
    session.end(reason, reason)
    assert pending.result is reason and not session.pending
    assert [room.state for room in (session.root, lobby, away)] == [State.CLOSED] * 3
    assert lobby.error is reason


# -- membership bookkeeping -----------------------------------------------------------------------


def test_join_then_notices_then_leave() -> None:
    session = open_session()
    changes: list[State] = []
    lobby: Membership[object] = Membership("lobby")
    lobby.attach("the I/O layer's object", lambda: changes.append(lobby.state))
    out = session.join(lobby)
    assert fields(out) == ("lobby", "join", "", "?1", b"") and lobby.state is State.JOINING
    feed(session, frame("lobby", "join_ack", src=ME, payload=b'["a", "me"]'))
    assert lobby.state is State.JOINED and lobby.members() == ["a", "me"]
    assert changes[-1] is State.JOINED
    (event,) = feed(session, frame("lobby", "new_member", payload=b"b"))
    assert isinstance(event, Deliver) and event.notice and event.room is lobby
    feed(session, frame("lobby", "new_member", payload=b"a"))  # repeated: keeps its place
    feed(session, frame("lobby", "member_left", payload=b"me"))
    assert lobby.members() == ["a", "b"]
    (event,) = feed(session, frame("lobby", "chat", src="a", payload=b"hi"))
    assert isinstance(event, Deliver) and not event.notice and event.msg.text == "hi"

    leave = session.leave(lobby)
    assert fields(leave) == ("lobby", "leave", ME, "?2", ME.encode())
    assert lobby.state is State.LEAVING and "lobby" not in session.rooms
    assert feed(session, frame("lobby", "chat", src="a")) == []  # not joined: dropped
    feed(session, frame("lobby", "leave_ack"))
    assert lobby.state is State.LEFT and not session.leaving
    assert changes[-2:] == [State.LEAVING, State.LEFT]


def test_a_leave_ack_with_no_leave_pending_means_the_server_removed_us() -> None:
    session = open_session()
    lobby = joined(session, "lobby")
    feed(session, frame("lobby", "leave_ack"))
    assert lobby.state is State.LEFT and "lobby" not in session.rooms
    feed(session, frame(ROOT, "leave_ack"))  # never for root
    assert session.root.state is State.JOINED


def test_a_refused_join_leaves_the_room_with_the_refusal() -> None:
    session = open_session()
    vip: Membership[object] = Membership("vip")
    out = session.join(vip)
    assert out.ref is not None
    feed(session, error(out.ref, "join_refused", room="vip", event="join"))
    assert vip.state is State.LEFT and "vip" not in session.rooms
    assert vip.refusal is not None and (vip.refusal.code, vip.refusal.room) == (
        "join_refused",
        "vip",
    )


def test_a_plain_join_given_up_is_left_when_its_join_ack_comes() -> None:
    session = open_session(extended=False)
    slow: Membership[object] = Membership("slow")
    assert fields(session.join(slow)) == ("slow", "join", "", "", b"")
    session.abandon_join(slow)
    assert slow.state is State.CLOSED and "slow" not in session.rooms
    (event,) = feed(session, frame("slow", "join_ack", src=ME, payload=b'["me"]'))
    assert isinstance(event, Send) and fields(event.out) == ("slow", "leave", ME, ME, b"me")
    # Only once per abandoned join.
    assert feed(session, frame("slow", "join_ack", src=ME, payload=b'["me"]')) == []


def test_a_join_again_before_the_late_join_ack_keeps_the_membership() -> None:
    session = open_session(extended=False)
    first: Membership[object] = Membership("slow")
    session.join(first)
    session.abandon_join(first)
    again: Membership[object] = Membership("slow")
    session.join(again)
    assert feed(session, frame("slow", "join_ack", src=ME, payload=b'["me"]')) == []
    assert again.state is State.JOINED and session.rooms["slow"] is again


def test_an_extended_join_given_up_is_left_once_its_reply_comes() -> None:
    session = open_session()
    slow: Membership[object] = Membership("slow")
    out = session.join(slow)
    assert out.ref is not None
    session.abandon_join(slow)
    assert feed(session, frame("slow", "join_ack", src=ME, payload=b'["me"]')) == []
    (event,) = feed(session, reply(out.ref, room="slow"))
    assert isinstance(event, Send)
    assert fields(event.out)[:3] == ("slow", "leave", ME) and event.out.ref is not None
    assert len(session.leaving["slow"]) == 1
    feed(session, reply(event.out.ref, room="slow"))
    feed(session, frame("slow", "leave_ack"))
    assert not session.leaving and not session.pending


def test_an_abandoned_join_that_was_answered_already_stays_joined() -> None:
    session = open_session()
    lobby = joined(session, "lobby")
    session.abandon_join(lobby)
    assert lobby.state is State.JOINED and session.rooms["lobby"] is lobby


# -- what is sent again on resume -----------------------------------------------------------------


def test_after_a_resume_the_probe_finds_the_frames_the_server_missed() -> None:
    session = open_session()
    lobby = joined(session, "lobby")
    answered = session.request(lobby, "a", "", b"", timeout=None)
    missed_1 = session.request(lobby, "b", "", b"", timeout=None)
    missed_2 = session.request(lobby, "c", "", b"", timeout=None)
    queued = session.request(lobby, "d", "", b"", timeout=None)
    for pending in (missed_2, answered, missed_1):
        session.writing(pending.ref)
    old_generation = session.generation

    opened = resume(session, frame(ROOT, RESUMED, payload=b"{}"))
    probe = opened.probe
    assert isinstance(probe, Pending) and probe.kind is Kind.PROBE
    assert fields(probe.outgoing())[:3] == ("", "leave", "")  # a room nobody can be in
    assert session.generation > old_generation
    session.writing(probe.ref)
    on_this_socket = session.request(lobby, "e", "", b"", timeout=None)
    session.writing(on_this_socket.ref)  # after the probe: its answer may still come
    feed(session, reply(answered.ref, b"ok"))  # the server got this one...
    feed(session, error(probe.ref, "not_a_member"))  # ...and then the probe
    assert probe.done

    again = session.probe_answered(session.generation)
    assert [out.ref for out in again] == [missed_1.ref, missed_2.ref]  # oldest first
    assert not any(out.data for out in again)  # their credits went back when first written
    assert missed_1.written is None and queued.written is None
    assert on_this_socket.written == session.generation
    assert answered.result == b"ok"


def test_a_lost_session_fails_what_was_written_and_joins_the_rooms_again() -> None:
    session = open_session()
    lobby = joined(session, "lobby")
    kitchen = joined(session, "kitchen")
    leaving = joined(session, "leaving")
    session.writing(session.leave(leaving).ref)
    written = session.request(lobby, "sent", "", b"", timeout=None)
    session.writing(written.ref)
    queued = session.request(lobby, "queued", "", b"", timeout=None)
    queued_join: Membership[object] = Membership("queued-join")
    session.join(queued_join)  # not written: it goes out on the new session as it is

    opened = resume(
        session,
        frame(ROOT, NOT_RESUMED, payload=b'{"reason":"buffer_overflow"}'),
        frame(ROOT, SESSION, payload=SESSION_BODY),
        frame(ROOT, "join_ack", src="me2", payload=b'["me2"]'),
    )
    assert opened.lost == SessionLost("buffer_overflow", ME, "me2", ("lobby", "kitchen"))
    assert [fields(out)[:2] for out in opened.preamble] == [
        ("lobby", "join"),
        ("kitchen", "join"),
    ]
    assert isinstance(written.result, RequestFailed) and written.result.code == "session_lost"
    assert not queued.done and queued.ref in session.pending
    assert leaving.state is State.LEFT and not session.leaving
    # Joined again once the rejoins' answers come; the joins are tracked like any.
    assert lobby.state is State.JOINED and kitchen.state is State.JOINED
    assert kitchen.join_ref == opened.preamble[1].ref and kitchen.join_ref in session.pending

    # A room the server will not take back ends, and the error is reported.
    rejoin_ref = opened.preamble[0].ref
    assert rejoin_ref is not None
    (event,) = feed(session, error(rejoin_ref, "join_refused", room="lobby", event="join"))
    assert isinstance(event, Report) and event.error.code == "join_refused"
    assert lobby.state is State.LEFT and "lobby" not in session.rooms


# -- backoff between resume attempts --------------------------------------------------------------


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def attempts_until_given_up(backoff: Backoff, now: float) -> list[float]:
    """Attempts that fail at once: the delays before each next one."""
    delays: list[float] = []
    while (delay := backoff.failed(now)) is not None:
        delays.append(delay)
        now += delay
    return delays


def test_backoff_doubles_up_to_two_seconds_within_the_window() -> None:
    backoff = Backoff(10.0, now=100.0, rng=NoJitter())
    delays = attempts_until_given_up(backoff, 100.0)
    # Failing at once, the attempts start 9.1 s after the drop; 2 s more is past the window.
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert backoff.attempts == len(delays) + 1  # the last failure gave up


def test_backoff_delays_are_jittered_by_at_most_a_fifth() -> None:
    delays = attempts_until_given_up(Backoff(60.0, now=0.0, rng=random.Random(7)), 0.0)
    nominal = [min(2.0, 0.1 * 2**i) for i in range(len(delays))]
    assert len(delays) > 20
    assert all(0.8 * n <= d <= 1.2 * n for d, n in zip(delays, nominal, strict=True))
    assert len({round(d / n, 6) for d, n in zip(delays, nominal, strict=True)}) > 1


def test_backoff_gives_up_when_the_next_attempt_would_start_after_the_window() -> None:
    assert Backoff(0.0, now=0.0).failed(0.0) is None
    backoff = Backoff(1.0, now=0.0)
    assert backoff.failed(0.5) is not None
    assert backoff.failed(0.95) is None
