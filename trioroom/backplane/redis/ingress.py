"""The subscriber connection: which channels a node listens to, and what arrives.

A node subscribes to its own channel (direct messages) and to the channel of
each room with local members: it subscribes when a room's first local member
joins and unsubscribes when the last one leaves, so it only receives traffic
for its rooms.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import trio
from coredis.connection import BaseConnection

from ..base import Node
from .keys import Keys
from .stats import RedisStats
from .wire import (
    CONTROL,
    ORIGIN_SIZE,
    SEQUENCE,
    SYSTEM_ORIGIN,
    Sequences,
    decode_direct,
    decode_room,
)

__all__ = ["Hold", "Ingress"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")

#: Channels per SUBSCRIBE or UNSUBSCRIBE command.
_CHANNELS_PER_COMMAND = 1000


class Hold(Protocol):
    """A connection arriving from another node: some room traffic is not for it yet."""

    conn_id: str

    def blocks(self, origin: bytes) -> bool:
        """Whether a room message from ``origin`` must skip the connection."""
        ...


class Ingress:
    """Subscriptions of one node and delivery of what they bring.

    Args:
        keys: Names of the channels.
        node_channel: This node's own channel (direct messages).
        origin: This node's origin in room messages (its own come back: skipped).
        origins: Filled with the origins of room messages received (the
            nodes sharing rooms with this one); the owner may clear it.
        sequences: The newest sequence number from each origin: a message
            seen before (sent again by its node) is skipped and counted in
            ``metrics.backplane_duplicates``.
        stats: Counts received messages.
        fail: Counts a malformed message as a failed operation (what, how many).
    """

    def __init__(
        self,
        keys: Keys,
        *,
        node_channel: bytes,
        origin: bytes,
        origins: set[bytes],
        sequences: Sequences,
        stats: RedisStats,
        fail: Callable[[str, int], None],
    ) -> None:
        self.keys = keys
        self.node_channel = node_channel
        self.origin = origin
        self.origins = origins
        self.sequences = sequences
        self.stats = stats
        self.fail = fail
        #: The subscriber connection of the current session, if any.
        self.sub: BaseConnection | None = None
        #: Subscribed channels -> set once Redis acknowledged the subscription.
        self.acks: dict[bytes, trio.Event] = {}
        #: Subscribed room channels -> room name.
        self.channel_rooms: dict[bytes, str] = {}
        #: Rooms with sessions arriving from another node (empty but while one moves).
        self.holds: dict[str, list[Hold]] = {}
        #: Called with each control message on the node channel (session handovers).
        self.on_control: Callable[[bytes], None] = lambda data: None

    def start(self, sub: BaseConnection) -> trio.Event:
        """Use a new connection: subscribe to the node channel; the event of its ack."""
        self.sub = sub
        self.acks = {}
        self.channel_rooms = {}
        acked = self.acks[self.node_channel] = trio.Event()
        self.send(b"SUBSCRIBE", [self.node_channel])
        return acked

    def stop(self) -> None:
        """Forget the connection; wake whoever waits for an acknowledgement."""
        self.sub = None
        for event in self.acks.values():
            event.set()
        self.acks = {}
        self.channel_rooms = {}

    def rooms(self) -> set[str]:
        """Rooms whose channel is subscribed."""
        return set(self.channel_rooms.values())

    def subscribe(self, rooms: Iterable[str]) -> trio.Event:
        """Subscribe to the channels of ``rooms``; the acknowledgement of the last one."""
        event = None
        new: list[bytes] = []
        for room in rooms:
            channel = self.keys.room_channel(room)
            event = self.acks.get(channel)
            if event is None:
                event = self.acks[channel] = trio.Event()
                self.channel_rooms[channel] = room
                new.append(channel)
        self.send(b"SUBSCRIBE", new)
        return event if event is not None else trio.Event()

    def unsubscribe(self, rooms: Iterable[str]) -> None:
        """Unsubscribe from the channels of ``rooms``."""
        gone: list[bytes] = []
        for room in rooms:
            channel = self.keys.room_channel(room)
            if self.acks.pop(channel, None) is not None:
                self.channel_rooms.pop(channel, None)
                gone.append(channel)
        self.send(b"UNSUBSCRIBE", gone)

    def send(self, command: bytes, channels: Sequence[bytes]) -> None:
        """Send (UN)SUBSCRIBE without waiting; the acknowledgement comes to :meth:`read`."""
        sub = self.sub
        if sub is None or not channels:
            return
        try:
            for start in range(0, len(channels), _CHANNELS_PER_COMMAND):
                sub.send_command(command, *channels[start : start + _CHANNELS_PER_COMMAND])
        except Exception as exc:
            # The reader notices the broken connection and reconnects.
            logger.debug("%s failed: %r", command.decode(), exc)

    async def read(self, sub: BaseConnection, node: Node) -> None:
        """Deliver what arrives on ``sub`` to ``node``, until the connection fails."""
        stats = self.stats
        node_channel = self.node_channel
        origin = self.origin
        channel_rooms = self.channel_rooms
        origins = self.origins
        holds = self.holds
        is_copy = self.sequences.is_copy
        sequence_of = SEQUENCE.unpack_from
        last_origin = origin
        async for push in sub.push_messages:
            kind = push[0]
            if kind == b"message":
                channel: Any = push[1]
                data: Any = push[2]
                try:
                    if channel == node_channel:
                        if data.startswith(CONTROL):
                            self.on_control(data)
                            continue
                        target, sender, sequence, message = decode_direct(data)
                        if is_copy(sender, sequence):
                            self._copy(node)
                            continue
                        stats.direct_received += 1
                        node.deliver_direct_from_backplane(target, message)
                        continue
                    room = channel_rooms.get(channel)
                    if room is None:
                        continue
                    if data.startswith(origin):
                        stats.echoes += 1
                        continue
                    if not data.startswith(last_origin):
                        last_origin = data[:ORIGIN_SIZE]
                        if last_origin != SYSTEM_ORIGIN:
                            origins.add(last_origin)
                    if is_copy(last_origin, sequence_of(data, ORIGIN_SIZE)[0]):
                        self._copy(node)
                        continue
                    stats.room_received += 1
                    exclude, message = decode_room(data)
                    if holds and room in holds:
                        # A session moving here: see docs/scaling.md, *Resuming on any node*.
                        sender = data[:ORIGIN_SIZE]
                        skip = {h.conn_id for h in holds[room] if h.blocks(sender)}
                        if skip:
                            skip.add(exclude)
                            node.handover.deliver_room_excluding(room, message, skip)
                            continue
                    node.deliver_room_from_backplane(room, message, exclude)
                except (
                    struct.error,
                    UnicodeDecodeError,
                    TypeError,
                    AttributeError,
                    ValueError,
                ) as exc:
                    self.fail(f"malformed message on {channel!r} ({exc})", 1)
            elif kind == b"subscribe":
                event = self.acks.get(push[1])  # type: ignore[arg-type]
                if event is not None:
                    event.set()

    def _copy(self, node: Node) -> None:
        # Sent again by its node after its publisher connection broke, though
        # Redis had run it: delivered once already.
        self.stats.duplicates += 1
        node.metrics.backplane_duplicates += 1
