"""Names of the Redis keys and channels of one cluster (``docs/scaling.md``, *Keys*)."""

from __future__ import annotations

import hashlib

__all__ = ["Keys", "token_hash"]


def token_hash(token: str) -> bytes:
    """What names a session in Redis: a hash, so that Redis never holds a resume token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32].encode()


class Keys:
    """Every key and channel under one prefix, as bytes.

    Methods taking ``node`` take a node ID as bytes (the 32 hex digits).
    """

    __slots__ = (
        "conns",
        "nodes",
        "p_alive",
        "p_handover",
        "p_members",
        "p_node",
        "p_nodeconns",
        "p_nodemembers",
        "p_nodesessions",
        "p_ready",
        "p_room",
        "p_session",
        "p_sweep",
        "rooms",
    )

    def __init__(self, prefix: str) -> None:
        p = prefix.encode() + b":"
        #: Channel prefixes: one channel per room and per node.
        self.p_room = p + b"room:"
        self.p_node = p + b"node:"
        #: Key prefixes, completed by a room or a node ID.
        self.p_members = p + b"members:"
        self.p_alive = p + b"alive:"
        self.p_nodemembers = p + b"nodemembers:"
        self.p_nodeconns = p + b"nodeconns:"
        self.p_sweep = p + b"sweep:"
        self.p_ready = p + b"ready:"
        self.p_session = p + b"session:"
        self.p_nodesessions = p + b"nodesessions:"
        self.p_handover = p + b"handover:"
        #: Set of registered node IDs.
        self.nodes = p + b"nodes"
        #: Hash: room -> member count, cluster-wide.
        self.rooms = p + b"rooms"
        #: Hash: connection ID -> node ID (direct message routing).
        self.conns = p + b"conns"

    def room_channel(self, room: str) -> bytes:
        """The channel of ``room``'s messages."""
        return self.p_room + room.encode()

    def node_channel(self, node: bytes) -> bytes:
        """The channel of direct messages to connections of ``node``."""
        return self.p_node + node

    def members(self, room: str) -> bytes:
        """Hash of ``room``'s members on every node: connection ID -> node ID."""
        return self.p_members + room.encode()

    def alive(self, node: bytes) -> bytes:
        """Liveness key of ``node``, refreshed with a TTL."""
        return self.p_alive + node

    def ready(self, node: bytes) -> bytes:
        """Set once ``node`` listens again after a (re)connection."""
        return self.p_ready + node

    def sweep(self, node: bytes) -> bytes:
        """Lock held by the one node cleaning up a dead ``node``."""
        return self.p_sweep + node

    def nodemembers(self, node: bytes) -> bytes:
        """Set of ``room\\0connection`` entries of ``node``'s memberships."""
        return self.p_nodemembers + node

    def session(self, token_hash: bytes) -> bytes:
        """Owner of a resumable session: node ID (32 hex digits) then connection ID."""
        return self.p_session + token_hash

    def nodesessions(self, node: bytes) -> bytes:
        """Set of the token hashes of ``node``'s sessions."""
        return self.p_nodesessions + node

    def handover(self, token_hash: bytes) -> bytes:
        """The request ID of the handover of a session in progress (with a TTL)."""
        return self.p_handover + token_hash

    def nodeconns(self, node: bytes) -> bytes:
        """Set of ``node``'s connection IDs."""
        return self.p_nodeconns + node
