"""Envelopes of the messages nodes exchange over Redis pub/sub.

A room message (published on ``<prefix>:room:<room>``) is the origin node's
16-byte ID, its 8-byte sequence number, a 2-byte length, the excluded
connection ID (the sender, or empty), then the encoded wsrooms message. A
direct message (published on the target node's channel by the direct script)
is a 2-byte length, the target connection ID, the origin and its sequence
number, then the encoded message. ``docs/scaling.md`` documents both.

Sequence numbers count each node's publishes from 1, in the order they reach
Redis: a receiver skips one it has already seen (a batch sent again after the
publisher connection broke, see :class:`Sequences`). 0 is unnumbered.
"""

from __future__ import annotations

import struct

from ...protocol import encode

__all__ = [
    "CONTROL",
    "ORIGIN_SIZE",
    "ROOM_HEADER",
    "SEQUENCE",
    "SYSTEM_ORIGIN",
    "Sequences",
    "decode_control",
    "decode_direct",
    "decode_room",
    "encode_control",
    "encode_direct",
    "encode_room",
    "member_left_notice",
]

#: Envelope of a room message: origin node (16 bytes), sequence number,
#: length of ``exclude``.
ROOM_HEADER = struct.Struct(">16sQH")
#: Bytes of the origin node ID that starts every room message.
ORIGIN_SIZE = 16
#: A sequence number (after the origin, in both envelopes).
SEQUENCE = struct.Struct(">Q")
_ORIGIN_AND_SEQUENCE = struct.Struct(">16sQ")
#: Envelope of a direct message: length of the target connection ID.
_LENGTH = struct.Struct(">H")
#: Start of a control message on a node channel (session handovers): a length
#: no connection ID has, where a direct message has its target's length.
CONTROL = b"\xff\xff"
_FIELD = struct.Struct(">I")
#: Origin of messages every node delivers, its own included (sweeper notices).
SYSTEM_ORIGIN = bytes(ORIGIN_SIZE)


def encode_room(origin: bytes, sequence: int, exclude: str, message: bytes) -> bytes:
    """Wrap an encoded message for a room channel."""
    excluded = exclude.encode()
    return b"".join((ROOM_HEADER.pack(origin, sequence, len(excluded)), excluded, message))


def decode_room(data: bytes) -> tuple[str, bytes]:
    """The excluded connection ID and the message of a room envelope.

    Raises :class:`struct.error` or :class:`UnicodeDecodeError` when malformed.
    The origin is ``data[:ORIGIN_SIZE]`` and the sequence number follows it:
    the reader checks both before decoding.
    """
    (size,) = _LENGTH.unpack_from(data, ORIGIN_SIZE + SEQUENCE.size)
    start = ROOM_HEADER.size
    exclude = data[start : start + size].decode() if size else ""
    return exclude, data[start + size :]


def encode_direct(conn_id: str, origin: bytes, sequence: int, message: bytes) -> bytes:
    """Wrap an encoded message for the connection ``conn_id`` on another node."""
    target = conn_id.encode()
    return b"".join(
        (
            _LENGTH.pack(len(target)),
            target,
            _ORIGIN_AND_SEQUENCE.pack(origin, sequence),
            message,
        )
    )


def decode_direct(data: bytes) -> tuple[str, bytes, int, bytes]:
    """The target connection ID, origin, sequence number and message of a direct envelope.

    Raises :class:`struct.error` or :class:`UnicodeDecodeError` when malformed.
    """
    (size,) = _LENGTH.unpack_from(data)
    start = _LENGTH.size + size
    origin, sequence = _ORIGIN_AND_SEQUENCE.unpack_from(data, start)
    target = data[_LENGTH.size : start].decode()
    return target, origin, sequence, data[start + _ORIGIN_AND_SEQUENCE.size :]


def member_left_notice(room: str, conn_id: str) -> bytes:
    """The room envelope of a ``member_left`` for a member of a dead node.

    It has the system origin, so every node delivers it, and excludes nobody.
    It is unnumbered: any node may send it, and the leave script sends it
    once per member.
    """
    message = encode(room, "member_left", "", "", conn_id.encode())
    return ROOM_HEADER.pack(SYSTEM_ORIGIN, 0, 0) + message


class Sequences:
    """The newest sequence number seen from each origin: tells a copy sent again.

    A node's messages reach each other node in the order of their numbers
    (one publisher connection, one subscriber connection, and Redis runs
    commands one at a time), so a number not above the newest seen from its
    origin is a copy: the publisher sends a batch again when its connection
    broke before Redis answered, though Redis may have run it.
    """

    __slots__ = ("newest",)

    def __init__(self) -> None:
        #: Origin -> the newest sequence number received from it.
        self.newest: dict[bytes, int] = {}

    def is_copy(self, origin: bytes, sequence: int) -> bool:
        """Whether ``sequence`` from ``origin`` was seen; remember it if not."""
        if not sequence:
            return False
        newest = self.newest
        if sequence <= newest.get(origin, 0):
            return True
        newest[origin] = sequence
        return False

    def keep_only(self, origins: set[bytes]) -> None:
        """Forget the origins not in ``origins`` (nodes no longer registered)."""
        newest = self.newest
        for origin in [o for o in newest if o not in origins]:
            del newest[origin]


def encode_control(kind: bytes, *fields: bytes) -> bytes:
    """A control message: :data:`CONTROL`, one byte of kind, then length-prefixed fields."""
    parts = [CONTROL, kind]
    for field in fields:
        parts += (_FIELD.pack(len(field)), field)
    return b"".join(parts)


def decode_control(data: bytes) -> tuple[bytes, list[bytes]]:
    """The kind and fields of a control message.

    Raises :class:`struct.error` or ``ValueError`` when malformed.
    """
    kind = data[2:3]
    fields = []
    offset = 3
    while offset < len(data):
        (size,) = _FIELD.unpack_from(data, offset)
        offset += _FIELD.size
        if offset + size > len(data):
            raise ValueError("control message truncated")
        fields.append(data[offset : offset + size])
        offset += size
    return kind, fields
