"""The frame codec: golden vectors from PROTOCOL.md §8, round trips, strictness."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from trioroom import wsframe
from trioroom.protocol import (
    FrameError,
    Message,
    _decode_fields_checked,
    decode_fields,
    encode,
    member_list_payload,
)

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def frame(*fields: bytes) -> bytes:
    return b"".join(field(f) for f in fields)


GOLDEN = [
    # (description, message, expected size)
    ("S->A root join_ack, A alone", Message("root", "join_ack", "", A, b"[]"), 70),
    ("A->S join lobby", Message("lobby", "join"), 29),
    ("S->B new_member in lobby", Message("lobby", "new_member", "", "", A), 71),
    ("A->S lobby chat hi", Message("lobby", "chat", "", A, b"hi"), 67),
    ("A->S leave lobby", Message("lobby", "leave", A, A, A), 138),
    ("S->A leave_ack", Message("lobby", "leave_ack", "", A, A), 106),
    ("S->B member_left", Message("lobby", "member_left", "", "", A), 72),
]


@pytest.mark.parametrize(("what", "msg", "size"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(what: str, msg: Message, size: int) -> None:
    expected = frame(
        msg.room.encode(), msg.event.encode(), msg.dst.encode(), msg.src.encode(), msg.payload
    )
    data = msg.encode()
    assert data == expected
    assert len(data) == size
    assert Message.decode(data) == msg


def test_join_ack_bytes_exactly() -> None:
    data = Message("root", "join_ack", "", A, b"[]").encode()
    assert data == (
        b"\x00\x00\x00\x04root\x00\x00\x00\x08join_ack\x00\x00\x00\x00"
        b"\x00\x00\x00\x24" + A.encode() + b"\x00\x00\x00\x02[]"
    )


def test_minimum_frame_is_twenty_zero_bytes() -> None:
    assert Message.decode(bytes(20)) == Message()
    assert Message().encode() == bytes(20)


def test_str_payload_is_stored_as_utf8() -> None:
    assert Message("r", "e", payload="é").payload == "é".encode()
    assert Message("r", "e", payload="é").text == "é"


def test_non_ascii_lengths_are_bytes() -> None:
    msg = Message("salle-é", "événement", "", "", "données ✓")
    data = msg.encode()
    assert data[:4] == struct.pack(">I", len("salle-é".encode()))
    assert Message.decode(data) == msg


def test_member_list_payload_is_compact_json() -> None:
    assert member_list_payload([]) == b"[]"
    assert member_list_payload([A, B]) == f'["{A}","{B}"]'.encode()


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"", "shorter than 20", 0),
        (bytes(19), "shorter than 20", 19),
        (struct.pack(">I", 100) + bytes(20), "field 'room' claims 100 bytes", 0),
        (bytes(20) + b"x", "1 trailing bytes", 20),
        (frame(b"r", b"e", b"", b"") + struct.pack(">I", 5) + b"ab", "'payload' claims 5", 18),
        (frame(b"\xff\xfe", b"e", b"", b"", b""), "'room' is not valid UTF-8", 4),
        (frame(b"r", b"e", b"", b"") + b"\x00\x00", "'payload' is cut off", 18),
        (struct.pack(">I", 0xFFFFFFFF) + bytes(16), "claims 4294967295 bytes", 0),
    ],
)
def test_malformed_frames_say_what_and_where(data: bytes, reason: str, offset: int) -> None:
    with pytest.raises(FrameError) as info:
        Message.decode(data)
    assert reason in str(info.value)
    assert info.value.offset == offset
    assert f"at offset {offset}" in str(info.value)


text = st.text(max_size=40)


@given(text, text, text, text, st.binary(max_size=200))
def test_round_trip(room: str, event: str, dst: str, src: str, payload: bytes) -> None:
    msg = Message(room, event, dst, src, payload)
    data = encode(room, event, dst, src, payload)
    assert data == msg.encode()
    assert Message.decode(data) == msg


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    try:
        Message.decode(data)
    except FrameError:
        pass


@given(text, text, st.binary(max_size=100), st.data())
def test_truncated_frames_raise_frame_error(
    room: str, event: str, payload: bytes, data: st.DataObject
) -> None:
    encoded = encode(room, event, "", "", payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(FrameError):
        Message.decode(encoded[:cut])
    with pytest.raises(FrameError):
        Message.decode(encoded + b"\x00")


def _decoded_or_error(decode: object, data: bytes) -> object:
    try:
        return decode(data)  # type: ignore[operator]
    except FrameError as exc:
        return ("error", str(exc), exc.offset)


@given(st.binary(max_size=120), st.data())
def test_the_unrolled_decoder_agrees_with_the_checked_one(data: bytes, draw: st.DataObject) -> None:
    # Frames made of small lengths, so that many of them are valid and the
    # rest fail at every possible place (cut off, too long, trailing bytes).
    lengths = draw.draw(st.lists(st.integers(0, 12), min_size=0, max_size=5))
    crafted = b"".join(struct.pack(">I", n) + data[:n] for n in lengths) + data[:3]
    for candidate in (data, crafted, crafted[:-3], bytearray(crafted[:-3])):
        expected = _decoded_or_error(_decode_fields_checked, bytes(candidate))
        assert _decoded_or_error(decode_fields, candidate) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_are_what_websockets_serialises_first_time_and_after(size: int) -> None:
    message = bytes(range(256)) * (size // 256) + b"m" * (size % 256)
    expected = Frame(Opcode.BINARY, message).serialize(mask=False)
    assert wsframe.binary_frame(message) == expected
    assert wsframe.binary_frame(message) == expected  # from the header cache
    assert wsframe.frame_payload(expected) == message


def test_the_header_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsframe, "_HEADERS", {})
    for size in range(wsframe._MAX_HEADERS + 50):
        message = b"y" * size
        assert wsframe.binary_frame(message) == Frame(Opcode.BINARY, message).serialize(mask=False)
    assert len(wsframe._HEADERS) == wsframe._MAX_HEADERS
    past = b"z" * (wsframe._MAX_HEADERS + 10)
    assert wsframe.binary_frame(past) == Frame(Opcode.BINARY, past).serialize(mask=False)
