"""One room as the client's session sees it (sans-I/O: no trio, no sockets, no clock)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Generic, TypeVar

from ..exceptions import ConnectionClosed, RequestFailed

__all__ = ["Membership", "State"]

#: The I/O layer's object for a room (the trio layer's ``Inbox``).
R = TypeVar("R")


class State(enum.StrEnum):
    """Where a room is: joining -> joined -> leaving -> left; closed once the connection ended."""

    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"
    LEFT = "left"
    CLOSED = "closed"


class Membership(Generic[R]):
    """One room as the session sees it: its state and its members.

    The I/O layer ties it to its own object with :meth:`attach` and is told
    of every change through the callable it registered.
    """

    __slots__ = (
        "_handle",
        "_members",
        "_on_change",
        "_state",
        "error",
        "join_ref",
        "name",
        "refusal",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = State.JOINING
        # A dict as an ordered set: each notice is O(1), and join order is kept.
        self._members: dict[str, None] = {}
        #: Extended connections: the ref of the latest join of the room...
        self.join_ref: str | None = None
        #: ...and why the server refused it.
        self.refusal: RequestFailed | None = None
        #: Why the connection ended, for readers of the room (``None``: the client closed it).
        self.error: ConnectionClosed | None = None
        self._handle: R | None = None
        self._on_change: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"<Membership {self.name!r} {self._state}>"

    def attach(self, handle: R, on_change: Callable[[], object]) -> None:
        """Tie this membership to the I/O layer's ``handle``; ``on_change()`` follows changes."""
        self._handle = handle
        self._on_change = on_change

    @property
    def handle(self) -> R:
        """The object given to :meth:`attach`."""
        if self._handle is None:
            raise RuntimeError(f"the membership of {self.name!r} is not attached")
        return self._handle

    @property
    def state(self) -> State:
        return self._state

    @property
    def open(self) -> bool:
        """Joining or joined: the room's messages may still be queued."""
        return self._state is State.JOINING or self._state is State.JOINED

    def members(self) -> list[str]:
        """A copy of the member IDs, in join order."""
        return list(self._members)

    def set_state(self, state: State) -> None:
        self._state = state
        self._changed()

    def set_members(self, ids: list[str]) -> None:
        self._members = dict.fromkeys(ids)
        self._changed()

    def notice(self, event: str, member: str) -> None:
        """A ``new_member`` or ``member_left`` notice."""
        if event == "new_member":
            self._members.setdefault(member)  # a repeated notice keeps the first place
        else:
            self._members.pop(member, None)
        self._changed()

    def end(self, error: ConnectionClosed | None) -> None:
        """The connection ended (``error`` is ``None`` when the client closed it)."""
        if self._state is not State.LEFT:
            self._state = State.CLOSED
        self.error = error
        self._changed()

    def remove(self, refusal: RequestFailed | None = None) -> None:
        """The server refused the join, or removed us: the room ends like one left."""
        self._state = State.LEFT
        self.refusal = refusal
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
