"""A trio lock per room, held across the waits of a membership change.

The hub (:mod:`trioroom.hub`) changes a room's membership synchronously; a
join or leave that waits on the backplane holds the room's lock meanwhile,
so joins and leaves of one room reach the backplane, and the members, in
order. A lock exists while a task holds or waits for it.
"""

from __future__ import annotations

import trio

__all__ = ["RoomLocks"]

#: Unused lock entries kept for reuse.
SPARE_ENTRIES = 64


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class RoomLocks:
    """The locks of the rooms whose membership is changing, by room name."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # Entries (and their trio locks) no task holds, kept for the next
        # hold: every connect and disconnect takes the lock of ``root``.
        self._spare: list[_Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, name: str) -> _Hold:
        """``async with locks.hold(room): ...`` holds the lock of ``room``."""
        return _Hold(self, name)

    def user(self, name: str) -> _Entry:
        """The entry of ``name``'s lock, counting one more task that holds or waits for it."""
        entry = self._entries.get(name)
        if entry is None:
            spare = self._spare
            entry = self._entries[name] = spare.pop() if spare else _Entry()
        entry.users += 1
        return entry

    def done(self, name: str, entry: _Entry) -> None:
        """A task no longer holds or waits for ``name``'s lock."""
        entry.users -= 1
        if not entry.users and self._entries.get(name) is entry:
            del self._entries[name]
            if len(self._spare) < SPARE_ENTRIES:
                self._spare.append(entry)


class _Hold:
    """The context manager of :meth:`RoomLocks.hold`.

    A class rather than ``@asynccontextmanager``: every connect and
    disconnect comes here, and a generator-based manager costs several times
    as much. Entering is a cancellation point, but an uncontended lock is
    taken without yielding to the scheduler (``trio.Lock.acquire`` always
    yields).
    """

    __slots__ = ("_entry", "_locks", "_name")

    def __init__(self, locks: RoomLocks, name: str) -> None:
        self._locks = locks
        self._name = name
        self._entry: _Entry | None = None

    async def __aenter__(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._entry = self._locks.user(self._name)
        try:
            entry.lock.acquire_nowait()
        except trio.WouldBlock:
            try:
                await entry.lock.acquire()
            except BaseException:
                self._locks.done(self._name, entry)
                raise

    async def __aexit__(self, *exc_info: object) -> None:
        entry = self._entry
        assert entry is not None
        self._entry = None
        entry.lock.release()
        self._locks.done(self._name, entry)
