"""Cross-node messages kept while Redis is unreachable.

They go out in order, ahead of new traffic, once Redis and the other nodes
are back. A batch in flight when the connection broke is kept again, and
Redis may have run part of it: the receiving nodes skip those copies by their
sequence numbers (``wire.Sequences``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ...protocol import FrameError, decode_fields
from ..base import Node
from .egress import PUBLISH, Op
from .wire import decode_direct, decode_room

__all__ = ["Outbox", "tell_sender"]


class Outbox:
    """Publishes and direct messages, oldest first, within a size and an age bound.

    Args:
        max_bytes: Message bytes kept at most. A message that does not fit
            is dropped (the newest: what waits keeps its order).
        max_seconds: A message that waited longer is dropped.
        on_drop: Told of each dropped message and why (a phrase).
    """

    __slots__ = ("held", "max_bytes", "max_seconds", "on_drop", "size")

    def __init__(
        self, max_bytes: int, max_seconds: float, on_drop: Callable[[Op, str], None]
    ) -> None:
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.on_drop = on_drop
        #: What waits, oldest first.
        self.held: deque[Op] = deque()
        #: Message bytes of what waits.
        self.size = 0

    def hold(self, op: Op, now: float) -> None:
        """Keep ``op`` (its wait counts from its first time here), or drop it."""
        self.expire(now)
        size = op.size
        if self.size + size > self.max_bytes:
            self.on_drop(op, f"the outbox is full ({self.max_bytes} bytes)")
            return
        if not op.since:
            op.since = now
        self.held.append(op)
        self.size += size

    def expire(self, now: float) -> None:
        """Drop what waited longer than ``max_seconds`` (the oldest first)."""
        held = self.held
        limit = now - self.max_seconds
        while held and held[0].since < limit:
            op = held.popleft()
            self.size -= op.size
            self.on_drop(op, f"it waited longer than {self.max_seconds:g}s")

    def drain(self) -> list[Op]:
        """Empty the outbox; return what it held, oldest first (none expired here)."""
        ops = list(self.held)
        self.held.clear()
        self.size = 0
        return ops

    def release(self, now: float) -> list[Op]:
        """Drop what is too old, then empty the outbox: the messages to send now."""
        self.expire(now)
        return self.drain()


def tell_sender(node: Node, op: Op, why: str) -> None:
    """Tell the sender of a dropped message (if extended and on ``node``) why."""
    data = op.args[-1]
    if op.kind == PUBLISH:
        _exclude, message = decode_room(data)
    else:
        message = decode_direct(data)[-1]
    try:
        room, event, _dst, src, _payload = decode_fields(message)
    except FrameError:  # pragma: no cover - we encoded it
        return
    if src:
        text = f"not delivered to other nodes: Redis is unreachable and {why}"
        node.tell_backplane_unavailable(src, room, event, text)
