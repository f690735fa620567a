"""The backplane seam and its in-process implementation."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..settings import Settings

__all__ = [
    "Backplane",
    "HandoverFailed",
    "LocalBackplane",
    "MovedSession",
    "Node",
    "SessionHost",
    "SessionOffer",
]


@attrs.frozen
class SessionOffer:
    """What the node holding a session tells the node taking it over, before the move."""

    conn_id: str
    #: The session's rooms, in the order it joined them.
    rooms: list[str]


@attrs.frozen
class MovedSession:
    """A session's frames, handed over by the node that held it."""

    #: Number of the first frame of ``replay`` (the client's ``last`` + 1).
    first: int
    #: Frames sent on the old socket after ``last``: replayed, already numbered.
    replay: list[bytes]
    #: Frames queued and not sent yet, in order: numbered when sent.
    queued: list[bytes]


@attrs.frozen
class HandoverFailed:
    """Why a session could not be taken over from another node."""

    #: The ``trioroom.not_resumed`` reason.
    reason: str
    #: The connection is registered to this node in the cluster already: it is
    #: this node's to end (its members are told it left).
    transferred: bool = False


#: ``adopt(offer)``: make the offered connection a local one, synchronously.
Adopt = Callable[[SessionOffer], None]


class SessionHost(Protocol):
    """What a backplane may use of the local server to move sessions between nodes."""

    async def prepare_handover(self, token: str, digest: str, last: int) -> SessionOffer | str:
        """Suspend the session of ``token`` for another node: the offer, or the reason not to.

        ``digest`` fingerprints the resuming client's claims; ``last`` is its
        count of numbered frames. From the offer on, the session waits for
        :meth:`release_session` or :meth:`abandon_handover`.
        """
        ...

    def release_session(self, conn_id: str) -> MovedSession | str:
        """The move happened: forget the session silently; its frames, or why it ended."""
        ...

    async def abandon_handover(self, conn_id: str) -> None:
        """The move did not happen: end the session here, as when its window passes."""
        ...

    def open_sessions(self) -> list[tuple[str, str]]:
        """Resumable sessions of this node: ``(token, connection ID)``."""
        ...

    def deliver_room_excluding(self, room: str, message: bytes, excluded: Collection[str]) -> int:
        """Like :meth:`Node.deliver_room_from_backplane`, skipping every ID in ``excluded``."""
        ...


class Node(Protocol):
    """What a backplane may use of the local server (:class:`~trioroom.Server` is one).

    A backplane sees its node only through this: it never imports the server.
    """

    settings: Settings
    metrics: Metrics

    @property
    def handover(self) -> SessionHost:
        """Moving resumable sessions between nodes."""
        ...

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

    def session_opened(self, token: str, conn_id: str) -> None:
        """A resumable session opened here (other nodes may look it up to resume it)."""

    def session_closed(self, token: str) -> None:
        """A resumable session of this node ended."""

    async def take_session(
        self, token: str, digest: str, last: int, adopt: Adopt
    ) -> MovedSession | HandoverFailed:
        """Take over session ``token`` from the node that holds it.

        ``digest`` fingerprints the resuming client's claims and ``last`` is
        its count of numbered frames. ``adopt`` is called (synchronously) with
        the offer once the other node agreed, at the moment this node starts
        receiving the session's traffic; on failure the result says whether
        the adopted connection must be ended here or only forgotten.
        """
        await trio.lowlevel.checkpoint()
        return HandoverFailed("unknown_token")


class LocalBackplane(Backplane):
    """A single process: no other nodes."""
