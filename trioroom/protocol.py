"""The wsrooms frame codec, sans-I/O.

A frame is five fields, each preceded by a 4-byte unsigned big-endian length
counted in bytes::

    u32 len | room | u32 len | event | u32 len | dst | u32 len | src | u32 len | payload

``room``, ``event``, ``dst`` and ``src`` are UTF-8 strings; ``payload`` is opaque
bytes. An empty string means "absent". See ``docs/protocol.md``.

Nothing here does I/O: :func:`encode` turns fields into bytes and
:meth:`Message.decode` turns bytes into a :class:`Message` or raises
:class:`FrameError`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable

import attrs

from .exceptions import FrameError

__all__ = [
    "CONTROL_CHARACTERS",
    "HEADER_SIZE",
    "MIN_FRAME_SIZE",
    "RESERVED_EVENTS",
    "FrameError",
    "Message",
    "decode_fields",
    "encode",
    "member_list_payload",
]

_LEN = struct.Struct(">I")
# One encoder for all calls: json.dumps with separators builds a new one each time.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode
_pack_len = _LEN.pack
_unpack_len_from = _LEN.unpack_from

#: Size of one length prefix.
HEADER_SIZE = 4
#: The smallest valid frame: five empty fields.
MIN_FRAME_SIZE = 5 * HEADER_SIZE

#: Events with a meaning in the protocol. Clients must not send custom events
#: with these names and servers must not register handlers for them.
#: ``open`` and ``close`` are local events of the JavaScript clients.
RESERVED_EVENTS = frozenset(
    {
        "open",
        "close",
        "join",
        "join_ack",
        "leave",
        "leave_ack",
        "new_member",
        "member_left",
    }
)

_STRING_FIELDS = ("room", "event", "dst", "src")

#: Characters a room or event name may not contain: C0 controls (NUL
#: included), DEL, C1 controls, and the Unicode line and paragraph separators.
#: Such names would reach logs, Redis keys and other clients' screens, and no
#: real application needs them; the server refuses them (see docs/protocol.md).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def encode(room: str, event: str, dst: str, src: str, payload: bytes) -> bytes:
    """Encode the five fields of a frame into bytes."""
    r = room.encode()
    e = event.encode()
    d = dst.encode()
    s = src.encode()
    return b"".join(
        (
            _pack_len(len(r)),
            r,
            _pack_len(len(e)),
            e,
            _pack_len(len(d)),
            d,
            _pack_len(len(s)),
            s,
            _pack_len(len(payload)),
            payload,
        )
    )


def member_list_payload(member_ids: Iterable[str]) -> bytes:
    """Encode a member list as the compact JSON array of strings clients expect."""
    return _compact_json(list(member_ids)).encode()


def _as_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


@attrs.frozen(slots=True)
class Message:
    """One frame of the wsrooms protocol.

    ``payload`` is bytes; a ``str`` given to the constructor is stored UTF-8
    encoded so that every message has one representation.
    """

    room: str = ""
    event: str = ""
    dst: str = ""
    src: str = ""
    payload: bytes = attrs.field(default=b"", converter=_as_bytes)

    def encode(self) -> bytes:
        """Return the wire form of this message."""
        return encode(self.room, self.event, self.dst, self.src, self.payload)

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (raises ``UnicodeDecodeError`` if it is not)."""
        return self.payload.decode()

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Message:
        """Parse one complete frame strictly (see :func:`decode_fields`).

        Raises :class:`FrameError` when a length runs past the end, bytes
        follow the payload, or a string field is not valid UTF-8.
        """
        return cls(*decode_fields(data))


def decode_fields(data: bytes | bytearray | memoryview) -> tuple[str, str, str, str, bytes]:
    """Parse one complete frame strictly into ``(room, event, dst, src, payload)``.

    The server's hot path uses this instead of :meth:`Message.decode`: a
    tuple costs a fraction of a frozen attrs instance. Raises
    :class:`FrameError` like :meth:`Message.decode`. Lengths are checked
    against the buffer before any field is copied, so a frame claiming huge
    fields allocates nothing (a ``bytearray`` or ``memoryview`` is first
    copied to ``bytes``, once).
    """
    # Slicing bytes is cheaper than slicing a memoryview for the short
    # fields of a frame; other buffers are copied once.
    buf = data if isinstance(data, bytes) else bytes(data)
    # The common case first, unrolled: every length is read (unpack_from
    # raises past the end) and the last field must end exactly at the end,
    # so no slice is taken of a frame that is cut off or claims too much.
    # Anything wrong goes to the loop below, which says what.
    try:
        (n,) = _unpack_len_from(buf, 0)
        room_end = 4 + n
        (n,) = _unpack_len_from(buf, room_end)
        event_end = room_end + 4 + n
        (n,) = _unpack_len_from(buf, event_end)
        dst_end = event_end + 4 + n
        (n,) = _unpack_len_from(buf, dst_end)
        src_end = dst_end + 4 + n
        (n,) = _unpack_len_from(buf, src_end)
        if src_end + 4 + n == len(buf):
            return (
                buf[4:room_end].decode(),
                buf[room_end + 4 : event_end].decode(),
                buf[event_end + 4 : dst_end].decode(),
                buf[dst_end + 4 : src_end].decode(),
                buf[src_end + 4 :],
            )
    except (struct.error, UnicodeDecodeError):
        pass
    return _decode_fields_checked(buf)


def _decode_fields_checked(buf: bytes) -> tuple[str, str, str, str, bytes]:
    size = len(buf)
    if size < MIN_FRAME_SIZE:
        raise FrameError(f"frame of {size} bytes is shorter than {MIN_FRAME_SIZE}", size)
    fields: list[str] = []
    offset = 0
    for name in _STRING_FIELDS:
        if offset + HEADER_SIZE > size:
            raise FrameError(f"length of field {name!r} is cut off", offset)
        (length,) = _unpack_len_from(buf, offset)
        start = offset + HEADER_SIZE
        end = start + length
        if end > size:
            raise FrameError(
                f"field {name!r} claims {length} bytes but only {size - start} remain",
                offset,
            )
        try:
            fields.append(buf[start:end].decode())
        except UnicodeDecodeError as exc:
            raise FrameError(
                f"field {name!r} is not valid UTF-8 ({exc.reason})", start + exc.start
            ) from None
        offset = end
    if offset + HEADER_SIZE > size:
        raise FrameError("length of field 'payload' is cut off", offset)
    (length,) = _unpack_len_from(buf, offset)
    start = offset + HEADER_SIZE
    end = start + length
    if end > size:
        raise FrameError(
            f"field 'payload' claims {length} bytes but only {size - start} remain", offset
        )
    if end != size:
        raise FrameError(f"{size - end} trailing bytes after the payload", end)
    return fields[0], fields[1], fields[2], fields[3], buf[start:end]
