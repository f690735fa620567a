"""Moving a resumable session to the node its client came back to.

The node that receives the resume (the *new* node) asks the node that holds
the session (the *old* node) through Redis; the old node suspends it and
offers its rooms; the new node subscribes to them, adopts the connection and
moves it in Redis in one script, which publishes a *cut* to both nodes; the
old node, at the cut, forgets the session silently and sends its frames. Why
no frame is lost or doubled is in ``docs/scaling.md`` (*Resuming on any
node*); the steps here follow it.

Messages (on the node channels, as control messages, see :mod:`.wire`):

====== ========= ==================================================================
kind   direction fields
====== ========= ==================================================================
``Q``  new → old request ID, new node, token, claims digest, last (the request)
``O``  old → new request ID, JSON offer ``{"conn", "rooms", "node"}`` or ``{"reason"}``
``C``  script    request ID (the cut, to both nodes)
``S``  old → new request ID, JSON ``{"first", "replay", "queued"}`` or
                 ``{"reason"}``, then the frames
``A``  script    request ID (the new node cancelled: the old one ends the session)
====== ========= ==================================================================
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import trio

from ..base import Adopt, HandoverFailed, MovedSession, Node, SessionOffer
from .egress import MEMBERSHIP, Op, Publisher
from .ingress import Ingress
from .keys import token_hash
from .membership import Commands, LocalMembership
from .wire import decode_control, encode_control

__all__ = ["Handovers"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")

REQUEST, OFFER, CUT, STATE, ABORT = b"Q", b"O", b"C", b"S", b"A"
#: Pause before asking again while another handover of the session runs.
_BUSY_PAUSE = 0.05


class Adoption:
    """A session this node takes over (the new node's side of one handover)."""

    __slots__ = (
        "conn_id",
        "offer",
        "offered",
        "old",
        "old_origin",
        "phase",
        "request",
        "rooms",
        "state",
        "stated",
    )

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.conn_id = ""
        self.rooms: list[str] = []
        self.old = b""
        self.old_origin = b""
        #: 0: adopted, before the cut: every room message from Redis was
        #: published before the move and is the old node's to deliver.
        #: 1: after the cut, until the frames: the old node's own messages
        #: were delivered there already. 2: done.
        self.phase = 0
        self.offer: SessionOffer | str = "node_lost"
        self.offered = trio.Event()
        self.state: MovedSession | HandoverFailed = HandoverFailed("node_lost", True)
        self.stated = trio.Event()

    def blocks(self, origin: bytes) -> bool:
        """Whether a room message from ``origin`` must skip the adopted connection."""
        return self.phase == 0 or (self.phase == 1 and origin == self.old_origin)


class Release:
    """A session this node hands over (the old node's side of one handover)."""

    __slots__ = ("aborted", "conn_id", "done", "request", "requester", "rooms", "token")

    def __init__(self, request: bytes, requester: bytes, token: str) -> None:
        self.request = request
        self.requester = requester
        self.token = token
        self.conn_id = ""
        self.rooms: list[str] = []
        self.aborted = False
        self.done = trio.Event()


class Handovers:
    """Both sides of session handovers for one node, and the sessions' records in Redis.

    Args:
        commands: Builds the Redis commands.
        publisher: The node's ordered command queue: the transfer and the
            frames go through it, behind the node's earlier publishes.
        ingress: The subscriptions: rooms of an arriving session, its holds.
        local: The node's membership as told to Redis.
        up: Whether Redis is reachable now.
        op_timeout: Bound on each Redis operation.
    """

    def __init__(
        self,
        commands: Commands,
        publisher: Publisher,
        ingress: Ingress,
        local: LocalMembership,
        up: Callable[[], bool],
        *,
        op_timeout: float,
    ) -> None:
        self.commands = commands
        self.publisher = publisher
        self.ingress = ingress
        self.local = local
        self.up = up
        self.op_timeout = op_timeout
        self.node: Node | None = None
        #: Where the old node's side runs (outliving Redis sessions); set by the backplane.
        self.nursery: trio.Nursery | None = None
        self.adoptions: dict[bytes, Adoption] = {}
        self.releases: dict[bytes, Release] = {}
        ingress.on_control = self.received

    @property
    def busy(self) -> bool:
        """True while a session moves to or from this node (reconciling would race it)."""
        return bool(self.adoptions or self.releases)

    @property
    def timeout(self) -> float:
        """Bound on each half of a handover: the old socket may take ``close_timeout`` to go."""
        assert self.node is not None
        return self.node.settings.close_timeout + 1 + 3 * self.op_timeout

    def _push(self, args: tuple[Any, ...], *, wait: bool = False) -> Op:
        return self.publisher.push(Op(args, MEMBERSHIP, wait=wait))

    def _publish(self, node: bytes, message: bytes) -> None:
        self._push((b"PUBLISH", self.commands.keys.node_channel(node), message))

    # -- the records of sessions ----------------------------------------------------

    def opened(self, token: str, conn_id: str) -> None:
        """Record a new session of this node (no checkpoint; a reconnect records it again)."""
        if self.up():
            for args in self.commands.session_open(token_hash(token), conn_id):
                self._push(args)

    def closed(self, token: str) -> None:
        """Forget a session of this node that ended."""
        if self.up():
            self._push(self.commands.session_end(token_hash(token)))

    def register_all(self) -> None:
        """Record every session of this node again (a new Redis session; no checkpoint)."""
        assert self.node is not None
        for token, conn_id in self.node.handover.open_sessions():
            for args in self.commands.session_open(token_hash(token), conn_id):
                self._push(args)

    # -- the new node's side -------------------------------------------------------------

    async def take(
        self, token: str, digest: str, last: int, adopt: Adopt
    ) -> MovedSession | HandoverFailed:
        """Take session ``token`` over from the node holding it (see the module docstring)."""
        if not self.up():
            # Redis is away: the node holding the session (if any) cannot be
            # asked, which is not the same as no node knowing the token.
            await trio.lowlevel.checkpoint()
            return HandoverFailed("unavailable")
        adoption = Adoption(secrets.token_hex(8).encode())
        self.adoptions[adoption.request] = adoption
        try:
            return await self._take(adoption, token, digest, last, adopt)
        finally:
            del self.adoptions[adoption.request]
            self._unhold(adoption)

    async def _take(
        self, adoption: Adoption, token: str, digest: str, last: int, adopt: Adopt
    ) -> MovedSession | HandoverFailed:
        hashed = token_hash(token)
        request = adoption.request
        transfer: Op | None = None
        with trio.move_on_after(self.timeout):
            failed = await self._request(adoption, hashed, token, digest, last)
            if failed is not None:
                return failed
            await adoption.offered.wait()
            offer = adoption.offer
            if isinstance(offer, str):
                # Refused: the next resume of it may ask at once.
                self._push(self.commands.handover_cancel(hashed, request, b""))
                return HandoverFailed(offer)
            # Registered locally first: a leave here meanwhile must not
            # unsubscribe a room the session is in.
            for room in offer.rooms:
                self.local.add(room, offer.conn_id)
            acks = [self.ingress.subscribe([room]) for room in offer.rooms]
            for ack in acks:
                await ack.wait()
            if not self.up():
                self._forget_rooms(adoption)
                return HandoverFailed("node_lost")
            # From here to the transfer's push, no checkpoint: this node's own
            # messages to the session's rooms are delivered to it locally from
            # now on, and reach Redis after the transfer.
            for room in offer.rooms:
                self.ingress.holds.setdefault(room, []).append(adoption)
            adopt(offer)
            cut = encode_control(CUT, request)
            transfer = self._push(
                self.commands.handover_transfer(
                    hashed, request, adoption.old, offer.conn_id, offer.rooms, cut
                ),
                wait=True,
            )
        if transfer is None:
            # Out of time before the transfer: make sure it never happens,
            # and let the old node end the session.
            abort = encode_control(ABORT, request)
            self._push(self.commands.handover_cancel(hashed, request, abort))
            self._forget_rooms(adoption)
            logger.warning(
                "Redis backplane: no answer in %.1fs from the node holding session %s",
                self.timeout,
                hashed.decode(),
            )
            return HandoverFailed("node_lost")
        with trio.move_on_after(self.timeout):
            return await self._transferred(adoption, transfer)
        logger.warning(
            "Redis backplane: session %s moved here but its frames did not come in %.1fs",
            adoption.conn_id,
            self.timeout,
        )
        return HandoverFailed("node_lost", transferred=True)

    async def _request(
        self, adoption: Adoption, hashed: bytes, token: str, digest: str, last: int
    ) -> HandoverFailed | None:
        """Send the request; ``None`` once the old node got it."""
        assert self.node is not None
        message = encode_control(
            REQUEST,
            adoption.request,
            self.commands.node_id,
            token.encode(),
            digest.encode(),
            str(last).encode(),
        )
        ttl_ms = int(self.timeout * 3 * 1000)
        while True:
            op = self._push(
                self.commands.handover_request(hashed, adoption.request, message, ttl_ms),
                wait=True,
            )
            assert op.event is not None
            await op.event.wait()
            heard = op.result
            if op.failed or not isinstance(heard, int):
                return HandoverFailed("unavailable")
            if heard == -1:
                return HandoverFailed("unknown_token")
            if heard == -2:
                # Its liveness key is gone, or nobody listens on its channel
                # (a killed process's connections close at once): its
                # session's frames died with it.
                return HandoverFailed("node_lost")
            if heard > 0:
                return None
            await trio.sleep(_BUSY_PAUSE)

    async def _transferred(self, adoption: Adoption, transfer: Op) -> MovedSession | HandoverFailed:
        """Wait for the transfer, then for the old node's frames."""
        assert transfer.event is not None
        with trio.move_on_after(self.op_timeout * 2):
            await transfer.event.wait()
        if transfer.event.is_set() and not transfer.failed and transfer.result != 1:
            # Cancelled, or the old node no longer has it: nothing moved.
            self._forget_rooms(adoption)
            return HandoverFailed("expired" if transfer.result == 0 else "node_lost")
        # Moved (or unknown, when Redis failed right then: treated as moved,
        # so the connection is ended properly here).
        await adoption.stated.wait()
        return adoption.state

    def _forget_rooms(self, adoption: Adoption) -> None:
        """Undo the local registration of an adoption that did not happen."""
        conn_id = adoption.conn_id
        if not conn_id:
            return
        emptied = [room for room in adoption.rooms if self.local.remove(room, conn_id)]
        self.ingress.unsubscribe(emptied)
        if self.local.in_no_room(conn_id):
            self.local.forget(conn_id)

    def _unhold(self, adoption: Adoption) -> None:
        adoption.phase = 2
        holds = self.ingress.holds
        for room in adoption.rooms:
            held = holds.get(room)
            if held is not None and adoption in held:
                held.remove(adoption)
                if not held:
                    del holds[room]

    # -- control messages (the reader: synchronous) --------------------------------------

    def received(self, data: bytes) -> None:
        """A control message arrived on this node's channel."""
        try:
            kind, fields = decode_control(data)
            if kind == REQUEST:
                self._requested(fields)
            elif kind == OFFER:
                self._offered(fields)
            elif kind == CUT:
                self._cut(fields[0])
            elif kind == STATE:
                self._stated(fields)
            elif kind == ABORT:
                release = self.releases.get(fields[0])
                if release is not None:
                    release.aborted = True
                    release.done.set()
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
            logger.warning("Redis backplane: malformed handover message dropped: %r", exc)

    def _offered(self, fields: list[bytes]) -> None:
        adoption = self.adoptions.get(fields[0])
        if adoption is None or adoption.offered.is_set():
            return
        body = json.loads(fields[1])
        if "reason" in body:
            adoption.offer = str(body["reason"])
        else:
            adoption.conn_id = str(body["conn"])
            adoption.rooms = [str(room) for room in body["rooms"]]
            adoption.old = str(body["node"]).encode()
            adoption.old_origin = uuid.UUID(body["node"]).bytes
            adoption.offer = SessionOffer(adoption.conn_id, adoption.rooms)
        adoption.offered.set()

    def _cut(self, request: bytes) -> None:
        adoption = self.adoptions.get(request)
        if adoption is not None and adoption.phase == 0:
            adoption.phase = 1
        release = self.releases.pop(request, None)
        if release is not None:
            self._release(release)

    def _stated(self, fields: list[bytes]) -> None:
        adoption = self.adoptions.get(fields[0])
        if adoption is None or adoption.stated.is_set():
            return
        body = json.loads(fields[1])
        if "reason" in body:
            adoption.state = HandoverFailed(str(body["reason"]), transferred=True)
        else:
            frames = fields[2:]
            replayed = int(body["replay"])
            adoption.state = MovedSession(int(body["first"]), frames[:replayed], frames[replayed:])
        # From this message on, the old node's messages are not delivered
        # there any more: deliver them here.
        self._unhold(adoption)
        adoption.stated.set()

    # -- the old node's side ---------------------------------------------------------------

    def _requested(self, fields: list[bytes]) -> None:
        request, requester, token, digest, last = fields[:5]
        release = Release(request, requester, token.decode())
        if self.nursery is None:
            return
        self.nursery.start_soon(self._hand_over, release, digest.decode(), int(last))

    async def _hand_over(self, release: Release, digest: str, last: int) -> None:
        """Offer the session, then wait for the cut (which :meth:`_release` handles)."""
        assert self.node is not None
        host = self.node.handover
        offer = await host.prepare_handover(release.token, digest, last)
        if isinstance(offer, str):
            self._publish(
                release.requester, encode_control(OFFER, release.request, _json(reason=offer))
            )
            return
        release.conn_id = offer.conn_id
        release.rooms = offer.rooms
        self.releases[release.request] = release
        body = _json(conn=offer.conn_id, rooms=offer.rooms, node=self.commands.node_id.decode())
        self._publish(release.requester, encode_control(OFFER, release.request, body))
        try:
            with trio.move_on_after(self.timeout + self.op_timeout):
                await release.done.wait()
            if release.done.is_set() and not release.aborted:
                return  # released at the cut
            self.releases.pop(release.request, None)
            await self._settle(release)
        finally:
            if self.releases.pop(release.request, None) is not None:
                # Cancelled (the node stops): the session ends here.
                with trio.CancelScope(shield=True), trio.move_on_after(self.timeout):
                    await host.abandon_handover(offer.conn_id)

    async def _settle(self, release: Release) -> None:
        """No cut in time: end the session here, or release it if it moved after all."""
        assert self.node is not None
        conn_id = release.conn_id
        moved = False
        if not release.aborted:
            # The transfer either never ran (cancel it for good) or ran and
            # its cut was lost with our subscription.
            op = self._push(
                self.commands.handover_cancel(
                    token_hash(release.token), release.request, b"", conn_id, self.commands.node_id
                ),
                wait=True,
            )
            assert op.event is not None
            with trio.move_on_after(self.op_timeout * 2):
                await op.event.wait()
            moved = op.result == 0 and not op.failed
        if moved:
            logger.warning(
                "Redis backplane: session of %s moved without a cut seen here; releasing it",
                conn_id,
            )
            self._release(release)
        else:
            logger.info("Redis backplane: handover of %s abandoned", conn_id)
            await self.node.handover.abandon_handover(conn_id)

    def _release(self, release: Release) -> None:
        """The cut: the session is the new node's. Forget it here and send its frames."""
        assert self.node is not None
        release.done.set()
        outcome = self.node.handover.release_session(release.conn_id)
        conn_id = release.conn_id
        emptied = [room for room in release.rooms if self.local.remove(room, conn_id)]
        self.ingress.unsubscribe(emptied)
        self.local.forget(conn_id)
        if isinstance(outcome, str):
            message = encode_control(STATE, release.request, _json(reason=outcome))
        else:
            header = _json(
                first=outcome.first, replay=len(outcome.replay), queued=len(outcome.queued)
            )
            message = encode_control(
                STATE, release.request, header, *outcome.replay, *outcome.queued
            )
        # Behind every room message this node published before the cut.
        self._publish(release.requester, message)


def _json(**body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
