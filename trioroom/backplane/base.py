"""The backplane seam and its in-process implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..settings import Settings

__all__ = ["Backplane", "LocalBackplane", "Node"]


class Node(Protocol):
    """What a backplane may use of the local server (:class:`~trioroom.Server` is one).

    A backplane sees its node only through this: it never imports the server.
    """

    settings: Settings
    metrics: Metrics

    def deliver_room_from_backplane(self, room: str, message: bytes, exclude: str) -> int:
        """Deliver an encoded message from another node to local members of ``room``.

        ``exclude`` is a connection ID that must not get it (or empty).
        Returns the number of local members it was queued to.
        """
        ...

    def deliver_direct_from_backplane(self, conn_id: str, message: bytes) -> bool:
        """Deliver an encoded message from another node to a local connection.

        Returns ``False`` when there is no such connection here (counted as
        ``unknown_dst``) or it did not take the message.
        """
        ...

    def local_rooms_of(self) -> dict[str, list[str]]:
        """Local membership: room name to member IDs."""
        ...

    def has_connection(self, conn_id: str) -> bool:
        """True when ``conn_id`` is a connection of this node."""
        ...

    def connection_ids(self) -> list[str]:
        """IDs of this node's connections."""
        ...

    def tell_backplane_unavailable(self, conn_id: str, room: str, event: str, message: str) -> None:
        """Tell an extended connection (if it is here and extended) that its frame was not
        delivered to other nodes: a ``trioroom.error`` with code ``backplane_unavailable``."""
        ...


class Backplane:
    """Interface between one server and the other nodes of a cluster.

    Methods called on the hot path (:meth:`publish_room`,
    :meth:`publish_direct`) must not block: implementations queue and batch.
    Membership methods are awaited under the room's lock, so they see joins
    and leaves of one room in order.
    """

    #: True when other nodes exist; the server skips publishing otherwise.
    distributed: bool = False

    @property
    def up(self) -> bool:
        """True while this node can reach the other nodes (always, in one process).

        ``/healthz`` and the ``trioroom_backplane_up`` gauge report it.
        """
        return True

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None]) -> None:
        """Run background work (subscriptions, liveness) for ``node`` until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def joined(self, room: str, conn_id: str) -> None:
        """A local connection joined ``room``."""

    async def left(self, room: str, conn_id: str) -> None:
        """A local connection left ``room`` (or disconnected)."""

    async def remote_members(self, room: str, *, limit: int | None = None) -> list[str]:
        """IDs of members of ``room`` on other nodes (at most ``limit`` of them)."""
        return []

    async def remote_rooms(self) -> list[str]:
        """Names of rooms with members on other nodes."""
        return []

    def publish_room(self, room: str, message: bytes, exclude: str) -> None:
        """Send an encoded message to ``room``'s members on other nodes."""

    def publish_direct(self, conn_id: str, message: bytes) -> bool:
        """Send an encoded message to a connection on another node, if it exists."""
        return False


class LocalBackplane(Backplane):
    """A single process: no other nodes."""
