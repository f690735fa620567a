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

from collections.abc import Iterator
from itertools import islice
from typing import Generic, TypeVar

import attrs
import trio

from .protocol import member_list_payload

__all__ = ["Room", "RoomLock", "RoomRegistry"]

M = TypeVar("M")


@attrs.define(eq=False)
class Room(Generic[M]):
    """A named set of members, in the order they joined."""

    name: str
    members: dict[str, M] = attrs.field(factory=dict)
    lock: trio.Lock = attrs.field(factory=trio.Lock, repr=False)
    #: True once the room left the registry; a closed room is never reused.
    closed: bool = False
    #: The encoded member list of the last ``join_ack`` (a JSON array of the
    #: first member IDs, see :meth:`encoded_members`); ``None`` when a
    #: membership change made it stale.
    member_list: bytes | None = attrs.field(default=None, init=False, repr=False)
    #: How many IDs ``member_list`` holds.
    member_list_size: int = attrs.field(default=0, init=False, repr=False)
    # The list reached its cap: members who join later come after it and
    # leave it as it is.
    _member_list_full: bool = attrs.field(default=False, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.members)

    def add(self, member_id: str, member: M) -> None:
        """Make ``member`` a member (it must not be one yet)."""
        self.members[member_id] = member
        if not self._member_list_full:
            self.member_list = None

    def remove(self, member_id: str) -> None:
        """End the membership of ``member_id`` (it must be a member)."""
        del self.members[member_id]
        self.member_list = None

    def encoded_members(self, cap: int) -> bytes:
        """The compact JSON array of the first ``cap`` member IDs, in join order.

        Encoded once and kept until the membership changes, so that joins of
        a large room cost a copy rather than an encoding of its list. ``cap``
        must be the same on every call for one room.
        """
        encoded = self.member_list
        if encoded is None:
            ids = list(islice(self.members, cap))
            encoded = self.member_list = member_list_payload(ids)
            self.member_list_size = len(ids)
            self._member_list_full = len(ids) >= cap
        return encoded

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

    def locked(self, name: str, *, create: bool) -> RoomLock[M]:
        """Hold the lock of room ``name`` for a membership change::

            async with registry.locked("lobby", create=True) as room:
                ...

        With ``create=True`` the room is created when missing; otherwise
        ``None`` is given for a missing room. However the block ends, even
        by cancellation, a room left without members is closed and removed,
        so a cancelled join never leaves an empty room behind.
        """
        return RoomLock(self, name, create)

    def _remove_if_empty(self, room: Room[M]) -> None:
        if not room.members and not room.closed:
            room.closed = True
            if self._rooms.get(room.name) is room:
                del self._rooms[room.name]


class RoomLock(Generic[M]):
    """The context manager of :meth:`RoomRegistry.locked`.

    A class rather than ``@asynccontextmanager``: every connect and disconnect
    goes through here, and a generator-based manager costs several times as
    much. Entering is a cancellation point, but an uncontended lock is taken
    without yielding to the scheduler (``trio.Lock.acquire`` always yields).
    """

    __slots__ = ("_create", "_name", "_registry", "_room")

    def __init__(self, registry: RoomRegistry[M], name: str, create: bool) -> None:
        self._registry = registry
        self._name = name
        self._create = create
        self._room: Room[M] | None = None

    async def __aenter__(self) -> Room[M] | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        registry = self._registry
        rooms = registry._rooms
        while True:
            room = rooms.get(self._name)
            if room is None:
                if not self._create:
                    return None
                room = Room(self._name)
                rooms[self._name] = room
            lock = room.lock
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                try:
                    await lock.acquire()
                except BaseException:
                    # Cancelled while waiting: a room we just created would
                    # stay empty forever unless someone removes it.
                    if not lock.locked():
                        registry._remove_if_empty(room)
                    raise
            if room.closed:
                # Emptied and removed while we waited: start over.
                lock.release()
                continue
            self._room = room
            return room

    async def __aexit__(self, *exc_info: object) -> None:
        room = self._room
        if room is not None:
            self._room = None
            self._registry._remove_if_empty(room)
            room.lock.release()
