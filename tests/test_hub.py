"""The room rules of docs/protocol.md, on the sans-I/O hub: no trio, no sockets, no clock.

Each test feeds the hub events (a message arrived, a join was authorised, a
handler returned) and checks the effects it returns: what must be written,
to whom, what is published, what is closed.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from trioroom.budget import Budget
from trioroom.codes import ROOT, CloseCode, ErrorCode
from trioroom.extension import ReplayBuffer
from trioroom.hub import Close, Deliver, Direct, Effect, Fanout, Handle, Hub, Join, Leave, Sessions
from trioroom.hub.sessions import claims_digest
from trioroom.metrics import Metrics
from trioroom.protocol import Message, encode
from trioroom.settings import Settings
from trioroom.wsframe import frame_payload


@attrs.define(eq=False)
class Peer:
    """A connection as the hub sees it: plain attributes (what Connection has)."""

    id: str
    extended: bool = False
    memberships: dict[str, None] = attrs.field(factory=dict)
    bad_frames: int = 0
    frames_dropped: int = 0
    rate_tokens: float = 0.0
    rate_tokens_at: float = 0.0
    replay: ReplayBuffer | None = None
    claims: Any = None
    resume_token: str | None = None
    close_code: int | None = None
    disconnect_reason: str = ""


def make_hub(**settings: Any) -> Hub[Peer]:
    return Hub(Settings(**settings), Metrics())


def connect(hub: Hub[Peer], conn_id: str, *, extended: bool = False) -> Peer:
    peer = Peer(conn_id, extended=extended)
    hub.join(peer, ROOT)
    hub.register(peer)
    return peer


def join(hub: Hub[Peer], peer: Peer, room: str) -> list[Effect]:
    assert hub.join_refusal(peer, room) is None
    assert not hub.room_full(peer, room)
    return hub.join(peer, room)[1]


def sent(effects: list[Effect]) -> list[tuple[str, Message]]:
    """Every frame the effects write locally, as (recipient, message), in order."""
    out = []
    for effect in effects:
        if isinstance(effect, Deliver):
            out.append((effect.member.id, Message.decode(frame_payload(effect.frame))))
        elif isinstance(effect, Fanout) and effect.room is not None:
            message = Message.decode(frame_payload(effect.frame))
            out += [(mid, message) for mid in effect.room.members if mid != effect.exclude]
    return out


def error_of(message: Message) -> dict[str, Any]:
    assert message.event == "trioroom.error"
    body: dict[str, Any] = json.loads(message.payload)
    return body


def test_join_acks_the_joiner_first_and_tells_the_others() -> None:
    hub = make_hub()
    a, b = connect(hub, "a"), connect(hub, "b")
    join(hub, a, "lobby")
    effects = join(hub, b, "lobby")
    (to_b, ack), (to_a, notice) = sent(effects)
    assert (to_b, ack.event, ack.room, ack.src) == ("b", "join_ack", "lobby", "b")
    assert json.loads(ack.payload) == ["b", "a"]
    assert (to_a, notice.event, notice.payload) == ("a", "new_member", b"b")
    assert b.memberships == {ROOT: None, "lobby": None}


def test_a_repeated_join_gets_the_joiner_alone_and_notifies_nobody() -> None:
    hub = make_hub()
    a, b = connect(hub, "a"), connect(hub, "b")
    join(hub, a, "lobby")
    join(hub, b, "lobby")
    new, effects = hub.join(b, "lobby")
    assert not new
    ((to, ack),) = sent(effects)
    assert to == "b" and json.loads(ack.payload) == ["b"]


def test_member_lists_are_capped_and_root_notices_follow_the_setting() -> None:
    hub = make_hub(member_list_limit=3, root_notices=False, root_member_list_limit=1)
    peers = [connect(hub, f"p{i}") for i in range(5)]
    for peer in peers[:4]:
        join(hub, peer, "lobby")
    ((_, ack), *_notices) = sent(join(hub, peers[4], "lobby"))
    assert json.loads(ack.payload) == ["p4", "p0", "p1"]
    # root: the joiner alone (limit 1) and no new_member to anyone.
    extra = Peer("late")
    assert [json.loads(m.payload) for _, m in sent(hub.join(extra, ROOT)[1])] == [["late"]]


def test_refused_joins_add_nothing_and_tell_extended_clients() -> None:
    hub = make_hub(max_rooms_per_connection=2, max_members_per_room=1)
    a = connect(hub, "a", extended=True)
    plain = connect(hub, "plain")
    assert hub.join_refusal(a, "") == "empty room name"
    join(hub, a, "full")
    assert hub.room_full(plain, "full")
    assert hub.join_refusal(a, "third") == "already in 2 rooms"
    ((to, error),) = sent(hub.refuse_join(a, "third", "already in 2 rooms", "7"))
    assert to == "a" and error.dst == "?7"
    assert error_of(error)["code"] == ErrorCode.JOIN_REFUSED
    assert sent(hub.refuse_join(plain, "full", "room is full", None)) == []
    assert hub.metrics.frames_dropped["join_refused"] == 2
    assert "third" not in a.memberships and hub.room("third") is None


def test_control_characters_in_a_room_name_refuse_the_join() -> None:
    hub = make_hub()
    a = connect(hub, "a", extended=True)
    ((_, error),) = sent(hub.receive(a, encode("bad\x00room", "join", "", "", b"")))
    assert error_of(error)["code"] == ErrorCode.JOIN_REFUSED
    assert hub.room("bad\x00room") is None


def test_join_and_leave_messages_are_handed_to_the_io_layer() -> None:
    hub = make_hub()
    a = connect(hub, "a", extended=True)
    (effect,) = hub.receive(a, encode("lobby", "join", "", "?1", b""))
    assert isinstance(effect, Join) and (effect.room, effect.ref) == ("lobby", "1")
    (effect,) = hub.receive(a, encode("lobby", "leave", "", "", b""))
    assert isinstance(effect, Leave) and (effect.room, effect.ref) == ("lobby", None)


def test_leave_tells_the_others_and_an_empty_room_is_removed() -> None:
    hub = make_hub()
    a, b = connect(hub, "a"), connect(hub, "b")
    join(hub, a, "lobby")
    join(hub, b, "lobby")
    left, effects = hub.leave(a, "lobby")
    assert left
    ((to, notice),) = sent(effects)
    assert (to, notice.event, notice.payload) == ("b", "member_left", b"a")
    ((to, ack),) = sent([hub.leave_ack(a, "lobby")])
    assert (to, ack.event, ack.payload) == ("a", "leave_ack", b"a")
    left, effects = hub.leave(b, "lobby")
    assert left and effects == [] and hub.room("lobby") is None
    assert hub.leave(b, "lobby") == (False, [])


def test_broadcast_excludes_the_sender_and_needs_membership() -> None:
    hub = make_hub()
    a, b, c = connect(hub, "a"), connect(hub, "b"), connect(hub, "c")
    join(hub, a, "lobby")
    join(hub, b, "lobby")
    effects = hub.receive(a, encode("lobby", "chat", "", "forged", b"hi"))
    assert [(to, m.event, m.src, m.payload) for to, m in sent(effects)] == [
        ("b", "chat", "a", b"hi")
    ]
    (fanout,) = effects
    assert isinstance(fanout, Fanout) and fanout.count and fanout.name == "lobby"
    assert hub.receive(c, encode("lobby", "chat", "", "", b"x")) == []
    assert hub.metrics.frames_dropped["not_a_member"] == 1


def test_a_request_is_answered_after_its_broadcast() -> None:
    hub = make_hub()
    a = connect(hub, "a", extended=True)
    join(hub, a, "lobby")
    effects = hub.receive(a, encode("lobby", "chat", "", "?42", b"x"))
    (_fanout, reply) = effects
    ((to, message),) = sent([reply])
    assert (to, message.event, message.dst) == ("a", "trioroom.reply", "?42")


def test_direct_messages_reach_one_connection_through_root_or_a_shared_room() -> None:
    hub = make_hub()
    a, b = connect(hub, "a", extended=True), connect(hub, "b")
    (effect,) = hub.receive(a, encode(ROOT, "dm", "b", "", b"psst"))
    assert isinstance(effect, Direct) and effect.target is b
    assert Message.decode(frame_payload(effect.frame)) == Message(ROOT, "dm", "b", "a", b"psst")
    assert hub.direct_done(effect, True) == []
    # A room the sender is not in: refused, whoever the recipient is.
    ((_, error),) = sent(hub.receive(a, encode("secret", "dm", "b", "", b"x")))
    assert error_of(error)["code"] == ErrorCode.NOT_A_MEMBER
    # An unknown recipient: the effect has no local target; the outcome is reported.
    (effect,) = hub.receive(a, encode(ROOT, "dm", "nobody", "?3", b""))
    assert isinstance(effect, Direct) and effect.target is None
    ((_, error),) = sent(hub.direct_done(effect, False))
    assert error_of(error)["code"] == ErrorCode.UNKNOWN_DESTINATION and error.dst == "?3"


def test_send_to_self_is_a_direct_message_to_ones_own_id() -> None:
    hub = make_hub()
    a = connect(hub, "a")
    (effect,) = hub.receive(a, encode(ROOT, "note", "a", "", b"me"))
    assert isinstance(effect, Direct) and effect.target is a


def test_handled_events_go_to_their_handler_and_requests_get_answers() -> None:
    hub = make_hub()
    hub.handled.add("ping")
    a = connect(hub, "a", extended=True)
    (effect,) = hub.receive(a, encode(ROOT, "ping", "", "?9", b"x"))
    assert isinstance(effect, Handle) and effect.message.src == "a" and effect.ref == "9"
    ((_, reply),) = sent(hub.handler_done(a, effect, value={"ok": True}))
    assert (reply.event, reply.dst, json.loads(reply.payload)) == (
        "trioroom.reply",
        "?9",
        {"ok": True},
    )
    ((_, error),) = sent(hub.handler_done(a, effect, timed_out=5.0))
    assert error_of(error)["code"] == ErrorCode.TIMEOUT
    ((_, error),) = sent(hub.handler_done(a, effect, error=KeyError("secret")))
    assert error_of(error) == {
        "code": ErrorCode.HANDLER_ERROR,
        "message": "the handler failed",
        "event": "ping",
    }


def test_reserved_and_malformed_frames_are_refused_then_closed() -> None:
    hub = make_hub(max_bad_frames=1)
    a = connect(hub, "a", extended=True)
    ((_, error),) = sent(hub.receive(a, encode(ROOT, "trioroom.session", "", "", b"x")))
    assert error_of(error)["code"] == ErrorCode.MALFORMED
    effects = hub.receive(a, encode(ROOT, "join_ack", "", "", b""))
    assert isinstance(effects[-1], Close)
    assert effects[-1].code == CloseCode.POLICY_VIOLATION
    assert hub.metrics.frames_dropped["malformed"] == 2


def test_the_rate_limit_uses_the_time_it_is_given() -> None:
    hub = make_hub(rate_limit=1.0, rate_burst=2, rate_limit_policy="drop")
    a = connect(hub, "a")
    a.rate_tokens = 2.0
    join(hub, a, "lobby")
    message = encode("lobby", "chat", "", "", b"")
    assert isinstance(hub.receive(a, message, now=0.0)[0], Fanout)
    assert isinstance(hub.receive(a, message, now=0.0)[0], Fanout)  # the burst of 2
    assert hub.receive(a, message, now=0.0) == []  # over the limit: dropped
    assert hub.metrics.frames_dropped["rate_limited"] == 1
    assert a.frames_dropped == 1
    hub.receive(a, message, now=1.0)  # a second later, a token is back
    assert hub.metrics.frames_dropped["rate_limited"] == 1


def test_members_on_other_nodes_are_listed_after_local_ones() -> None:
    hub = make_hub(member_list_limit=4)
    hub.distributed = True
    a = connect(hub, "a")
    join(hub, a, "lobby")
    b = connect(hub, "b")
    assert hub.remote_ids_wanted(b, "lobby") == 2
    _, effects = hub.join(b, "lobby", remote=["r1", "r2", "r3"])
    ((_, ack), *_) = sent(effects)
    assert json.loads(ack.payload) == ["b", "a", "r1", "r2"]
    # Distributed: a notice is published even with no other local member.
    c = connect(hub, "c")
    assert any(isinstance(e, Fanout) for e in hub.join(c, "alone")[1])


def test_sessions_number_frames_and_replay_what_was_not_acknowledged() -> None:
    settings = Settings(resume_buffer_frames=3, resume_buffer_bytes=1000)
    sessions: Sessions[Peer] = Sessions(settings, Budget(10_000), new_token=lambda: "tok")
    peer = Peer("a", extended=True, claims="alice")
    frame = frame_payload(sessions.open(peer, "a"))
    assert json.loads(Message.decode(frame).payload)["token"] == "tok"
    replay = peer.replay
    assert replay is not None
    for n in range(1, 5):
        replay.record(bytes([n]))
    # Acknowledged up to 2 of 4: 3 and 4 are replayed, in order.
    hub = make_hub()
    hub.receive(peer, encode(ROOT, "trioroom.ack", "", "", b"2"))
    assert replay.since(2) == [b"\x03", b"\x04"]
    # Frame 1 was pushed out of the buffer (3 frames): a resume from 0 has a gap.
    assert replay.since(0) is None
    assert sessions.find("tok", "alice", "2") == (peer, 2, None)
    assert sessions.find("tok", "mallory", "2") == (None, 0, "identity_mismatch")
    assert sessions.find("tok", "alice", "x") == (None, 0, "bad_request")
    assert sessions.find("other", "alice", "0") == (None, 0, "unknown_token")


@pytest.mark.parametrize(
    ("reason", "code", "suspends"),
    [
        ("peer", CloseCode.ABNORMAL_CLOSURE, True),
        ("peer", CloseCode.NORMAL, False),
        ("heartbeat_timeout", CloseCode.INTERNAL_ERROR, True),
        ("kicked", CloseCode.KICKED, False),
    ],
)
def test_only_a_lost_socket_suspends_a_session(reason: str, code: int, suspends: bool) -> None:
    sessions: Sessions[Peer] = Sessions(Settings(), Budget(10_000))
    peer = Peer("a")
    sessions.open(peer, "a")
    peer.disconnect_reason, peer.close_code = reason, code
    assert sessions.may_suspend(peer, shutting_down=False) is suspends
    assert not sessions.may_suspend(peer, shutting_down=True)
    sessions.end(peer)
    token = peer.resume_token
    assert token is not None
    expected = {"peer": "closed", "heartbeat_timeout": "closed", "kicked": "kicked"}[reason]
    assert sessions.find(token, None, "0") == (None, 0, expected)


def test_a_session_moving_to_another_node_leaves_and_arrives_without_notices() -> None:
    old_node, new_node = make_hub(), make_hub()
    a, b = connect(old_node, "a"), connect(old_node, "b")
    join(old_node, a, "lobby")
    join(old_node, b, "lobby")
    # The old node lets the session go: no member_left for anyone, and the
    # room stays with its other member.
    old_node.detach(a)
    assert old_node.member("a") is None
    lobby = old_node.room("lobby")
    assert lobby is not None and list(lobby.members) == ["b"]
    # The new node takes it with its rooms, as a member that was always there.
    moved = Peer("a")
    new_node.adopt(moved, ["root", "lobby"])
    assert new_node.member("a") is moved
    assert moved.memberships == {ROOT: None, "lobby": None}
    c = connect(new_node, "c")
    ((_, ack), *notices) = sent(join(new_node, c, "lobby"))
    assert json.loads(ack.payload) == ["c", "a"]
    assert [(to, m.event) for to, m in notices] == [("a", "new_member")]
    # The last local member moving away removes the room.
    old_node.detach(b)
    assert old_node.room("lobby") is None


def test_a_handover_is_refused_for_the_same_reasons_as_a_local_resume() -> None:
    sessions: Sessions[Peer] = Sessions(Settings(), Budget(10_000), new_token=lambda: "tok")
    peer = Peer("a", claims={"user": "alice"})
    sessions.open(peer, "a")
    alice = claims_digest({"user": "alice"})
    assert sessions.handover_refusal("tok", alice, 0) == (peer, None)
    assert sessions.handover_refusal("tok", claims_digest({"user": "eve"}), 0) == (
        None,
        "identity_mismatch",
    )
    assert sessions.handover_refusal("tok", alice, -1) == (None, "bad_request")
    assert sessions.handover_refusal("nope", alice, 0) == (None, "unknown_token")
    # Claims are compared by content, not by object: another node rebuilt them.
    assert claims_digest({"b": 1, "a": 2}) == claims_digest({"a": 2, "b": 1})
    # A handover already under way: a second one is refused.
    sessions.moving.add("tok")
    assert sessions.handover_refusal("tok", alice, 0) == (None, "expired")
    # Given away: this node forgets it without remembering an ending.
    sessions.release(peer)
    assert sessions.get("tok") is None
    assert sessions.handover_refusal("tok", alice, 0) == (None, "unknown_token")
    # Taken back: the token names the session here again.
    sessions.adopt(peer, "tok")
    assert sessions.get("tok") is peer
