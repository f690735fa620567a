"""Envelopes of the messages nodes exchange over Redis pub/sub.

A room message (published on ``<prefix>:room:<room>``) is the origin node's
16-byte ID, a 2-byte length, the excluded connection ID (the sender, or
empty), then the encoded wsrooms message. A direct message (published on the
target node's channel by the direct script) is a 2-byte length, the target
connection ID, then the encoded message. ``docs/scaling.md`` documents both.
"""

from __future__ import annotations

import struct

from ...protocol import encode

__all__ = [
    "CONTROL",
    "ORIGIN_SIZE",
    "ROOM_HEADER",
    "SYSTEM_ORIGIN",
    "decode_control",
    "decode_direct",
    "decode_room",
    "encode_control",
    "encode_direct",
    "encode_room",
    "member_left_notice",
]

#: Envelope of a room message: origin node (16 bytes), length of ``exclude``.
ROOM_HEADER = struct.Struct(">16sH")
#: Bytes of the origin node ID that starts every room message.
ORIGIN_SIZE = 16
#: Envelope of a direct message: length of the target connection ID.
_LENGTH = struct.Struct(">H")
#: Start of a control message on a node channel (session handovers): a length
#: no connection ID has, where a direct message has its target's length.
CONTROL = b"\xff\xff"
_FIELD = struct.Struct(">I")
#: Origin of messages every node delivers, its own included (sweeper notices).
SYSTEM_ORIGIN = bytes(ORIGIN_SIZE)


def encode_room(origin: bytes, exclude: str, message: bytes) -> bytes:
    """Wrap an encoded message for a room channel."""
    excluded = exclude.encode()
    return b"".join((ROOM_HEADER.pack(origin, len(excluded)), excluded, message))


def decode_room(data: bytes) -> tuple[str, bytes]:
    """The excluded connection ID and the message of a room envelope.

    Raises :class:`struct.error` or :class:`UnicodeDecodeError` when malformed.
    The origin is ``data[:ORIGIN_SIZE]``: the reader checks it before decoding.
    """
    (size,) = _LENGTH.unpack_from(data, ORIGIN_SIZE)
    start = ROOM_HEADER.size
    exclude = data[start : start + size].decode() if size else ""
    return exclude, data[start + size :]


def encode_direct(conn_id: str, message: bytes) -> bytes:
    """Wrap an encoded message for the connection ``conn_id`` on another node."""
    target = conn_id.encode()
    return b"".join((_LENGTH.pack(len(target)), target, message))


def decode_direct(data: bytes) -> tuple[str, bytes]:
    """The target connection ID and the message of a direct envelope.

    Raises :class:`struct.error` or :class:`UnicodeDecodeError` when malformed.
    """
    (size,) = _LENGTH.unpack_from(data)
    start = _LENGTH.size
    return data[start : start + size].decode(), data[start + size :]


def member_left_notice(room: str, conn_id: str) -> bytes:
    """The room envelope of a ``member_left`` for a member of a dead node.

    It has the system origin, so every node delivers it, and excludes nobody.
    """
    message = encode(room, "member_left", "", "", conn_id.encode())
    return ROOM_HEADER.pack(SYSTEM_ORIGIN, 0) + message


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
