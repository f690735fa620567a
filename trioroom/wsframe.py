"""WebSocket framing of outbound messages, done once per message.

A server's frames are unmasked and trioroom negotiates no extension, so one
serialised frame is valid on every connection: a broadcast frames its message
once and puts the same bytes object in every recipient's queue.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode

__all__ = ["binary_frame", "frame_payload"]


#: Frame headers by payload length, as websockets serialised them. A header
#: depends on nothing else (final, binary, unmasked, no extension), and a
#: frame is built once per message: serialize() costs as much as the rest
#: of a direct message's rules. Bounded: lengths past it are serialised anew.
_HEADERS: dict[int, bytes] = {}
_MAX_HEADERS = 4096


def binary_frame(message: bytes) -> bytes:
    """Serialise ``message`` as one unmasked, final WebSocket binary frame."""
    header = _HEADERS.get(len(message))
    if header is not None:
        return header + message
    frame = Frame(Opcode.BINARY, message).serialize(mask=False)
    if len(_HEADERS) < _MAX_HEADERS:
        _HEADERS[len(message)] = frame[: len(frame) - len(message)]
    return frame


def frame_payload(frame: bytes) -> bytes:
    """The message inside a frame made by :func:`binary_frame`.

    Used by transports that frame messages themselves (trio-websocket).
    """
    length = frame[1] & 0x7F
    if length == 126:
        return frame[4:]
    if length == 127:
        return frame[10:]
    return frame[2:]
