"""The backplane seam and its in-process implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["Backplane", "LocalBackplane"]


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

    async def run(self, server: Server, *, task_status: trio.TaskStatus[None]) -> None:
        """Run background work (subscriptions, liveness) until cancelled."""
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
