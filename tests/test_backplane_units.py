"""Parts of the Redis backplane that need no Redis: the envelopes, the outbox
bounds, and the membership repair after a reconnect."""

from __future__ import annotations

import uuid
from typing import cast

from trioroom.backplane import Node
from trioroom.backplane.redis.egress import DIRECT_MESSAGE, PUBLISH, Op
from trioroom.backplane.redis.keys import Keys
from trioroom.backplane.redis.membership import Commands, LocalMembership
from trioroom.backplane.redis.outbox import Outbox, tell_sender
from trioroom.backplane.redis.wire import (
    SYSTEM_ORIGIN,
    Sequences,
    decode_direct,
    decode_room,
    encode_direct,
    encode_room,
    member_left_notice,
)
from trioroom.protocol import decode_fields, encode

ORIGIN = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes


# -- envelopes: what nodes of different versions must agree on ------------------


def test_room_envelope_is_origin_sequence_length_exclude_message() -> None:
    message = encode("lobby", "chat", "", "a", b"hi")
    data = encode_room(ORIGIN, 258, "a", message)
    # docs/scaling.md: 16 bytes of origin, an 8-byte sequence number, a
    # 2-byte length, the excluded ID.
    assert data == ORIGIN + bytes(6) + b"\x01\x02" + b"\x00\x01" + b"a" + message
    assert decode_room(data) == ("a", message)
    assert decode_room(encode_room(ORIGIN, 1, "", message)) == ("", message)


def test_direct_envelope_is_length_target_origin_sequence_message() -> None:
    message = encode("lobby", "dm", "b-id", "a", b"hi")
    data = encode_direct("b-id", ORIGIN, 7, message)
    assert data == b"\x00\x04b-id" + ORIGIN + bytes(7) + b"\x07" + message
    assert decode_direct(data) == ("b-id", ORIGIN, 7, message)


def test_a_message_seen_before_from_its_origin_is_a_copy() -> None:
    other = bytes(range(16))
    seen = Sequences()
    assert [seen.is_copy(ORIGIN, n) for n in (1, 2, 3)] == [False] * 3
    # The batch 2..4 sent again: 2 and 3 were delivered, 4 was not.
    assert [seen.is_copy(ORIGIN, n) for n in (2, 3, 4)] == [True, True, False]
    # Each origin counts on its own; 0 is unnumbered (never a copy).
    assert seen.is_copy(other, 1) is False
    assert [seen.is_copy(SYSTEM_ORIGIN, 0) for _ in range(2)] == [False, False]
    # A node no longer registered is forgotten.
    seen.keep_only({other})
    assert seen.newest == {other: 1}


def test_member_left_notice_reaches_every_node_and_excludes_nobody() -> None:
    data = member_left_notice("lobby", "gone-id")
    assert data.startswith(SYSTEM_ORIGIN)
    exclude, message = decode_room(data)
    assert exclude == ""
    assert decode_fields(message) == ("lobby", "member_left", "", "", b"gone-id")


# -- the outbox ---------------------------------------------------------------


def held(size: int, kind: int = PUBLISH) -> Op:
    return Op((b"PUBLISH", b"ch", b"x" * size), kind)


def test_outbox_drops_the_newest_that_does_not_fit_and_keeps_the_order() -> None:
    drops: list[tuple[Op, str]] = []
    outbox = Outbox(10, 60.0, lambda op, why: drops.append((op, why)))
    first, second, too_big, third = held(4), held(4), held(3), held(2)
    for op in (first, second, too_big, third):
        outbox.hold(op, now=100.0)
    assert [op for op, _ in drops] == [too_big]
    assert "full (10 bytes)" in drops[0][1]
    assert outbox.size == 10
    assert outbox.release(now=101.0) == [first, second, third]
    assert (list(outbox.held), outbox.size) == ([], 0)


def test_outbox_drops_what_waited_too_long_oldest_first() -> None:
    drops: list[Op] = []
    outbox = Outbox(100, 5.0, lambda op, why: drops.append(op))
    old, newer = held(1), held(1)
    outbox.hold(old, now=10.0)
    outbox.hold(newer, now=12.0)
    assert outbox.release(now=16.0) == [newer]
    assert drops == [old]
    assert outbox.size == 0


def test_a_message_kept_again_still_counts_its_wait_from_the_first_time() -> None:
    # A publish held, sent when Redis came back, then kept again when the
    # connection broke before Redis answered: its age bound does not restart.
    drops: list[Op] = []
    outbox = Outbox(100, 5.0, lambda op, why: drops.append(op))
    op = held(1)
    outbox.hold(op, now=10.0)
    assert outbox.drain() == [op]
    outbox.hold(op, now=14.0)
    assert op.since == 10.0
    assert outbox.release(now=15.5) == []
    assert drops == [op]


class RecordingNode:
    def __init__(self) -> None:
        self.told: list[tuple[str, str, str, str]] = []

    def tell_backplane_unavailable(self, conn_id: str, room: str, event: str, message: str) -> None:
        self.told.append((conn_id, room, event, message))


def test_the_sender_of_a_dropped_message_is_told() -> None:
    recorder = RecordingNode()
    node = cast(Node, recorder)
    chat = encode_room(ORIGIN, 1, "a", encode("lobby", "chat", "", "a", b"hi"))
    tell_sender(node, Op((b"PUBLISH", b"ch", chat), PUBLISH), "the outbox is full")
    dm = encode_direct("b", ORIGIN, 2, encode("lobby", "dm", "b", "a", b"hi"))
    tell_sender(node, Op((b"EVALSHA", dm), DIRECT_MESSAGE), "it waited")
    # A server-made message (no sender) tells nobody.
    notice = member_left_notice("lobby", "x")
    tell_sender(node, Op((b"PUBLISH", b"ch", notice), PUBLISH), "it waited")
    assert [told[:3] for told in recorder.told] == [("a", "lobby", "chat"), ("a", "lobby", "dm")]
    assert recorder.told[0][3].endswith("Redis is unreachable and the outbox is full")


# -- membership repair --------------------------------------------------------


def entry(room: str, conn_id: str) -> bytes:
    return f"{room}\0{conn_id}".encode()


def test_repair_registers_what_redis_lacks_and_removes_what_it_should_not_have() -> None:
    local = LocalMembership()
    local.add("root", "a")
    local.add("lobby", "a")
    repair = local.repair(
        {"root": ["a"], "lobby": ["a"]},
        ["a", "b"],  # b is connected but in no room: routing only
        {entry("root", "a"), entry("old", "z")},
        {b"a", b"z"},
    )
    assert repair.joins == [("lobby", "a")]
    assert repair.leaves == [("old", "z")]
    assert sorted(repair.registers) == ["b"]
    assert repair.unregisters == ["z"]


def test_a_membership_the_server_lost_is_dropped_on_the_second_repair_only() -> None:
    # A join in progress is recorded before the server adds the member: one
    # repair seeing it missing must not remove it.
    local = LocalMembership()
    local.add("lobby", "a")
    first = local.repair({}, ["a"], {entry("lobby", "a")}, {b"a"})
    assert (first.leaves, local.rooms) == ([], {"lobby": {"a"}})
    second = local.repair({}, ["a"], {entry("lobby", "a")}, {b"a"})
    assert second.leaves == [("lobby", "a")]
    assert local.rooms == {}
    assert local.in_no_room("a")


def test_leaving_the_last_room_empties_it() -> None:
    local = LocalMembership()
    local.add("lobby", "a")
    local.add("lobby", "b")
    assert not local.remove("lobby", "a")
    assert local.remove("lobby", "b")
    assert local.remove("lobby", "b") is False  # twice: nothing more
    assert local.count("lobby") == 0


def test_removing_a_dead_node_tells_rooms_but_root_only_with_root_notices() -> None:
    commands = Commands(Keys("p"), b"me")
    commands.shas = [b"join", b"leave", b"unregister", b"direct"]
    entries = [entry("root", "x"), entry("lobby", "x")]
    for root_notices, expected in ((True, 2), (False, 1)):
        removal = commands.remove_node(b"dead", entries, [b"x"], root_notices=root_notices)
        leaves = [args for args in removal if args[1] == b"leave"]
        assert [args[-1] != b"" for args in leaves].count(True) == expected
        assert removal[-2] == (b"SREM", b"p:nodes", b"dead")
