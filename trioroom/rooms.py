"""Room membership state, without I/O.

A :class:`Room` maps member IDs to members in join order and carries a
:class:`trio.Lock` that serialises joins and leaves of that room. Broadcasts
do not take the lock: they read ``members`` between two checkpoints, which
Trio makes atomic.

:class:`RoomRegistry` creates rooms on demand and removes a room as soon as it
is empty. A removed room is marked ``closed`` *while its lock is held*, so a
task that was waiting for that lock sees the flag and starts over with a fresh
room instead of joining one that is no longer registered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["Room", "RoomRegistry"]

M = TypeVar("M")


@attrs.define(eq=False)
class Room(Generic[M]):
    """A named set of members, in the order they joined."""

    name: str
    members: dict[str, M] = attrs.field(factory=dict)
    lock: trio.Lock = attrs.field(factory=trio.Lock, repr=False)
    #: True once the room left the registry; a closed room is never reused.
    closed: bool = False

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.members


@attrs.define(eq=False)
class RoomRegistry(Generic[M]):
    """All rooms of one server process, by name."""

    _rooms: dict[str, Room[M]] = attrs.field(factory=dict, alias="rooms")

    def get(self, name: str) -> Room[M] | None:
        """The open room called ``name``, or ``None``."""
        return self._rooms.get(name)

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room[M]]:
        return iter(list(self._rooms.values()))

    def names(self) -> list[str]:
        return list(self._rooms)

    @asynccontextmanager
    async def locked(self, name: str, *, create: bool) -> AsyncIterator[Room[M] | None]:
        """Hold the lock of room ``name`` for a membership change.

        With ``create=True`` the room is created when missing; otherwise
        ``None`` is yielded for a missing room. However the block ends, even
        by cancellation, a room left without members is closed and removed,
        so a cancelled join never leaves an empty room behind.
        """
        while True:
            room = self._rooms.get(name)
            if room is None:
                if not create:
                    yield None
                    return
                room = Room(name)
                self._rooms[name] = room
            try:
                await room.lock.acquire()
            except BaseException:
                # Cancelled while waiting: a room we just created would stay
                # empty forever unless someone removes it.
                if not room.lock.locked():
                    self._remove_if_empty(room)
                raise
            try:
                if room.closed:
                    continue
                yield room
                return
            finally:
                self._remove_if_empty(room)
                room.lock.release()

    def _remove_if_empty(self, room: Room[M]) -> None:
        if not room.members and not room.closed:
            room.closed = True
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]
