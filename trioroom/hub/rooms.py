"""Rooms and their members, in join order: plain data, no I/O and no locks.

The I/O layer serialises the membership changes of a room with a trio lock
(:class:`trioroom.locks.RoomLocks`) only where a change waits on something
(the backplane); everything here runs between two checkpoints.
"""

from __future__ import annotations

from itertools import islice
from typing import Generic, TypeVar

import attrs

from ..protocol import member_list_payload

__all__ = ["Room"]

M = TypeVar("M")


@attrs.define(eq=False)
class Room(Generic[M]):
    """A named set of members, in the order they joined.

    ``members`` maps each member's ID to the I/O layer's object for it (a
    :class:`~trioroom.Connection` in the server); the hub never looks inside.
    """

    name: str
    members: dict[str, M] = attrs.field(factory=dict)
    #: The encoded member list of the last ``join_ack`` (a JSON array of the
    #: first member IDs, see :meth:`encoded_members`); ``None`` when a
    #: membership change made it stale.
    member_list: bytes | None = attrs.field(default=None, init=False, repr=False)
    #: How many IDs ``member_list`` holds.
    member_list_size: int = attrs.field(default=0, init=False, repr=False)
    # The list reached its cap: members who join later come after it and
    # leave it as it is.
    member_list_full: bool = attrs.field(default=False, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.members

    def add(self, member_id: str, member: M) -> None:
        """Make ``member`` a member (it must not be one yet)."""
        self.members[member_id] = member
        if not self.member_list_full:
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
            self.member_list_full = len(ids) >= cap
        return encoded
