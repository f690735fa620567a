"""Membership in Redis: the Lua scripts, the commands running them, and the
local record of what this node registered (and how to repair the difference).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ...codes import ROOT
from .keys import Keys
from .wire import member_left_notice

__all__ = ["DIRECT_SHA", "SCRIPTS", "Commands", "LocalMembership", "Repair"]

Command = tuple[Any, ...]

# The scripts are idempotent, so re-registering after a reconnect or a sweep
# racing a sweep does no harm.
#
# KEYS: members:<room>, nodemembers:<node>, rooms, conns, nodeconns:<node>
# ARGV: conn id, "<room>\0<conn id>", room, node
JOIN = b"""
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[1])
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  return 1
end
return 0
"""
# KEYS: members:<room>, nodemembers:<node>, rooms
# ARGV: conn id, "<room>\0<conn id>", room, node, room channel, notice or ""
LEAVE = b"""
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[4] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1
"""
# KEYS: conns, nodeconns:<node>; ARGV: conn id, node
UNREGISTER = b"""
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
# KEYS: conns; ARGV: conn id, node channel prefix, payload.
# Returns the number of receiving nodes, or -1 for an unknown connection.
DIRECT = b"""
local node = redis.call('HGET', KEYS[1], ARGV[1])
if not node then
  return -1
end
return redis.call('PUBLISH', ARGV[2] .. node, ARGV[3])
"""
# Sessions moving between nodes (docs/scaling.md, *Resuming on any node*).
# A session's record, session:<hash>, is the owner's node ID (32 hex digits)
# followed by the connection ID.
#
# KEYS: session:<hash>, handover:<hash>
# ARGV: alive key prefix, node channel prefix, request ID, request message, TTL (ms)
# Returns the number of nodes that got the request, -1 for no such session,
# -2 when its node is gone, -3 when another handover of it is in progress.
HANDOVER_REQUEST = b"""
local owner = redis.call('GET', KEYS[1])
if not owner then
  return -1
end
owner = string.sub(owner, 1, 32)
if redis.call('EXISTS', ARGV[1] .. owner) == 0 then
  return -2
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[5]) then
  return -3
end
local heard = redis.call('PUBLISH', ARGV[2] .. owner, ARGV[4])
if heard == 0 then
  redis.call('DEL', KEYS[2])
  return -2
end
return heard
"""
# Moves the connection, its memberships and its session from the old node to
# the new one in one step, then tells both: the cut (see docs/scaling.md).
# KEYS: handover:<hash>, session:<hash>, conns, nodeconns:<old>, nodeconns:<new>,
#       nodesessions:<old>, nodesessions:<new>, nodemembers:<old>,
#       nodemembers:<new>, then members:<room> of each room
# ARGV: request ID, old node, new node, conn ID, hash, node channel prefix,
#       cut message, then the room names
# Returns 1 when moved, 0 when the handover was cancelled, -1 when the old
# node no longer holds the connection.
HANDOVER_TRANSFER = b"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[3], ARGV[4]) ~= ARGV[2] then
  return -1
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('SET', KEYS[2], ARGV[3] .. ARGV[4])
redis.call('SREM', KEYS[6], ARGV[5])
redis.call('SADD', KEYS[7], ARGV[5])
for i = 8, #ARGV do
  local key = KEYS[i + 2]
  local entry = ARGV[i] .. '\\0' .. ARGV[4]
  if redis.call('HGET', key, ARGV[4]) == ARGV[2] then
    redis.call('HSET', key, ARGV[4], ARGV[3])
    redis.call('SREM', KEYS[8], entry)
    redis.call('SADD', KEYS[9], entry)
  end
end
redis.call('PUBLISH', ARGV[6] .. ARGV[2], ARGV[7])
redis.call('PUBLISH', ARGV[6] .. ARGV[3], ARGV[7])
return 1
"""
# Cancels a handover that has not transferred yet (it never will after this).
# KEYS: handover:<hash>, session:<hash>, conns
# ARGV: request ID, node channel prefix, abort message, conn ID, old node
# Returns 1 when cancelled, 2 when it was not (or no longer) pending and the
# old node still holds the connection, 0 when the connection moved.
HANDOVER_CANCEL = b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local owner = redis.call('GET', KEYS[2])
  if owner and ARGV[3] ~= '' then
    redis.call('PUBLISH', ARGV[2] .. string.sub(owner, 1, 32), ARGV[3])
  end
  return 1
end
if ARGV[4] == '' or redis.call('HGET', KEYS[3], ARGV[4]) == ARGV[5] then
  return 2
end
return 0
"""
# KEYS: session:<hash>, nodesessions:<node>; ARGV: hash, node
SESSION_END = b"""
redis.call('SREM', KEYS[2], ARGV[1])
local owner = redis.call('GET', KEYS[1])
if owner and string.sub(owner, 1, 32) == ARGV[2] then
  redis.call('DEL', KEYS[1])
end
"""
#: Loaded at the start of every session, in this order (see :attr:`Commands.shas`).
SCRIPTS = (
    JOIN,
    LEAVE,
    UNREGISTER,
    DIRECT,
    HANDOVER_REQUEST,
    HANDOVER_TRANSFER,
    HANDOVER_CANCEL,
    SESSION_END,
)
#: What SCRIPT LOAD answers for DIRECT: direct messages held before any session
#: name the script by it.
DIRECT_SHA = hashlib.sha1(DIRECT).hexdigest().encode()


class Commands:
    """Builds the Redis commands of membership changes, as argument tuples."""

    __slots__ = ("keys", "node_id", "shas")

    def __init__(self, keys: Keys, node_id: bytes) -> None:
        self.keys = keys
        #: This node's ID.
        self.node_id = node_id
        #: SHA1 of each of :data:`SCRIPTS`, as the current session loaded them.
        self.shas: list[bytes] = []

    def join(self, room: str, conn_id: str) -> Command:
        """Register this node's ``conn_id`` and its membership of ``room``."""
        keys = self.keys
        room_b, cid = room.encode(), conn_id.encode()
        return (
            b"EVALSHA",
            self.shas[0],
            5,
            keys.p_members + room_b,
            keys.nodemembers(self.node_id),
            keys.rooms,
            keys.conns,
            keys.nodeconns(self.node_id),
            cid,
            room_b + b"\0" + cid,
            room_b,
            self.node_id,
        )

    def leave(self, room: str, conn_id: str, node: bytes, notice: bytes = b"") -> Command:
        """Remove ``node``'s membership; publish ``notice`` to the room if it was there."""
        keys = self.keys
        room_b, cid = room.encode(), conn_id.encode()
        return (
            b"EVALSHA",
            self.shas[1],
            3,
            keys.p_members + room_b,
            keys.nodemembers(node),
            keys.rooms,
            cid,
            room_b + b"\0" + cid,
            room_b,
            node,
            keys.p_room + room_b,
            notice,
        )

    def unregister(self, conn_id: str, node: bytes) -> Command:
        """Forget ``node``'s connection (direct messages to it stop being routed)."""
        keys = self.keys
        return (
            b"EVALSHA",
            self.shas[2],
            2,
            keys.conns,
            keys.nodeconns(node),
            conn_id.encode(),
            node,
        )

    def register(self, conn_id: str) -> list[Command]:
        """Register this node's connection (in no room: routing only)."""
        cid = conn_id.encode()
        return [
            (b"HSET", self.keys.conns, cid, self.node_id),
            (b"SADD", self.keys.nodeconns(self.node_id), cid),
        ]

    def direct(self, conn_id: str, envelope: bytes, *, held: bool = False) -> Command:
        """Route a direct-message envelope to the node of ``conn_id``.

        ``held``: for the outbox, which may fill before any session loaded
        the scripts.
        """
        sha = DIRECT_SHA if held else self.shas[3]
        return (b"EVALSHA", sha, 1, self.keys.conns, conn_id.encode(), self.keys.p_node, envelope)

    # -- sessions (docs/scaling.md, *Resuming on any node*) ----------------------

    def session_open(self, token_hash: bytes, conn_id: str) -> list[Command]:
        """Record that this node holds the session ``token_hash`` of ``conn_id``."""
        keys, node = self.keys, self.node_id
        return [
            (b"SET", keys.session(token_hash), node + conn_id.encode()),
            (b"SADD", keys.nodesessions(node), token_hash),
        ]

    def session_end(self, token_hash: bytes) -> Command:
        """Forget the session ``token_hash``, unless another node holds it now."""
        keys, node = self.keys, self.node_id
        return (
            b"EVALSHA",
            self.shas[7],
            2,
            keys.session(token_hash),
            keys.nodesessions(node),
            token_hash,
            node,
        )

    def handover_request(
        self, token_hash: bytes, request: bytes, message: bytes, ttl_ms: int
    ) -> Command:
        """Ask the node holding ``token_hash`` to hand it over (see the script)."""
        keys = self.keys
        return (
            b"EVALSHA",
            self.shas[4],
            2,
            keys.session(token_hash),
            keys.handover(token_hash),
            keys.p_alive,
            keys.p_node,
            request,
            message,
            str(ttl_ms).encode(),
        )

    def handover_transfer(
        self,
        token_hash: bytes,
        request: bytes,
        old: bytes,
        conn_id: str,
        rooms: list[str],
        cut: bytes,
    ) -> Command:
        """Move ``conn_id``, its ``rooms`` and its session from ``old`` to this node."""
        keys, new = self.keys, self.node_id
        return (
            b"EVALSHA",
            self.shas[5],
            9 + len(rooms),
            keys.handover(token_hash),
            keys.session(token_hash),
            keys.conns,
            keys.nodeconns(old),
            keys.nodeconns(new),
            keys.nodesessions(old),
            keys.nodesessions(new),
            keys.nodemembers(old),
            keys.nodemembers(new),
            *(keys.members(room) for room in rooms),
            request,
            old,
            new,
            conn_id.encode(),
            token_hash,
            keys.p_node,
            cut,
            *(room.encode() for room in rooms),
        )

    def handover_cancel(
        self, token_hash: bytes, request: bytes, abort: bytes, conn_id: str = "", old: bytes = b""
    ) -> Command:
        """Cancel a handover not transferred yet; tell the old node (``abort``, if any)."""
        keys = self.keys
        return (
            b"EVALSHA",
            self.shas[6],
            3,
            keys.handover(token_hash),
            keys.session(token_hash),
            keys.conns,
            request,
            keys.p_node,
            abort,
            conn_id.encode(),
            old,
        )

    def remove_node(
        self,
        node: bytes,
        entries: Iterable[bytes],
        conns: Iterable[bytes],
        *,
        root_notices: bool,
        sessions: Iterable[bytes] = (),
        session_ttl_ms: int = 0,
    ) -> list[Command]:
        """Remove a node and its memberships (``room\\0conn``) and connections.

        Each room left gets a ``member_left`` (``root`` only with ``root_notices``).
        The records of its ``sessions`` (token hashes) stay for ``session_ttl_ms``,
        so that a client resuming one meanwhile learns that its node is gone
        (``node_lost``) rather than ``unknown_token``.
        """
        keys = self.keys
        commands: list[Command] = []
        for token_hash in sessions:
            commands.append((b"PEXPIRE", keys.session(token_hash), max(session_ttl_ms, 1)))
        for entry in entries:
            room_b, _, cid = entry.partition(b"\0")
            room, conn_id = room_b.decode(errors="replace"), cid.decode(errors="replace")
            notice = b""
            if room != ROOT or root_notices:
                notice = member_left_notice(room, conn_id)
            commands.append(self.leave(room, conn_id, node, notice))
        for cid in conns:
            commands.append(self.unregister(cid.decode(errors="replace"), node))
        commands.append((b"SREM", keys.nodes, node))
        commands.append(
            (
                b"DEL",
                keys.nodemembers(node),
                keys.nodeconns(node),
                keys.nodesessions(node),
                keys.alive(node),
                keys.ready(node),
            )
        )
        return commands

    def repair(self, repair: Repair) -> list[Command]:
        """The commands of a :class:`Repair`, leaves first."""
        node = self.node_id
        commands = [self.leave(room, conn_id, node) for room, conn_id in repair.leaves]
        commands += [self.join(room, conn_id) for room, conn_id in repair.joins]
        commands += [self.unregister(conn_id, node) for conn_id in repair.unregisters]
        for conn_id in repair.registers:
            commands += self.register(conn_id)
        return commands


@attrs.frozen
class Repair:
    """What to change in Redis so that it matches this node's membership."""

    #: Memberships (room, connection ID) Redis has and should not, and lacks.
    leaves: list[tuple[str, str]]
    joins: list[tuple[str, str]]
    #: Connection IDs Redis has and should not, and lacks.
    unregisters: list[str]
    registers: list[str]


class LocalMembership:
    """This node's membership as last told to Redis.

    It follows the joins and leaves the server reports, even while Redis is
    unreachable, so that a new session can register exactly this.
    """

    __slots__ = ("conn_rooms", "rooms", "stale")

    def __init__(self) -> None:
        #: Room -> IDs of its local members.
        self.rooms: dict[str, set[str]] = {}
        #: Connection ID -> number of rooms it is in here.
        self.conn_rooms: Counter[str] = Counter()
        #: Memberships the server did not have at the last repair.
        self.stale: set[tuple[str, str]] = set()

    def add(self, room: str, conn_id: str) -> None:
        """Record a local join."""
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = set()
        if conn_id not in members:
            members.add(conn_id)
            self.conn_rooms[conn_id] += 1

    def remove(self, room: str, conn_id: str) -> bool:
        """Record a local leave; True when it left ``room`` without local members."""
        members = self.rooms.get(room)
        if members is None or conn_id not in members:
            return False
        self._discard(room, members, conn_id)
        return room not in self.rooms

    def in_no_room(self, conn_id: str) -> bool:
        """True when ``conn_id`` is a member of no room here."""
        return self.conn_rooms[conn_id] <= 0

    def forget(self, conn_id: str) -> None:
        """Forget a connection that is gone."""
        self.conn_rooms.pop(conn_id, None)

    def count(self, room: str) -> int:
        """Local members of ``room``."""
        return len(self.rooms.get(room, ()))

    def repair(
        self,
        actual: Mapping[str, Iterable[str]],
        connection_ids: Iterable[str],
        remote_entries: set[bytes],
        remote_conns: set[bytes],
    ) -> Repair:
        """Compare with Redis's record of this node; drop what the server lost.

        ``actual`` is the server's membership (room -> member IDs) and
        ``connection_ids`` its connections; ``remote_entries``
        (``room\\0conn``) and ``remote_conns`` are what Redis holds for this
        node. A membership the server no longer has (a leave that timed out,
        a join cancelled after it was registered) is dropped once seen on two
        repairs in a row: a join in progress is registered here before the
        server adds the member.
        """
        stale: set[tuple[str, str]] = set()
        for room, members in self.rooms.items():
            present = actual.get(room, ())
            stale.update((room, conn_id) for conn_id in members.difference(present))
        for room, conn_id in stale & self.stale:
            self._discard(room, self.rooms[room], conn_id)
        self.stale = stale - self.stale
        entries: dict[bytes, tuple[str, str]] = {}
        for room, members in self.rooms.items():
            room_b = room.encode()
            for conn_id in members:
                entries[room_b + b"\0" + conn_id.encode()] = (room, conn_id)
        leaves = []
        for entry in remote_entries.difference(entries):
            room_b, _, cid = entry.partition(b"\0")
            leaves.append((room_b.decode(), cid.decode()))
        joins = [entries[entry] for entry in set(entries).difference(remote_entries)]
        for conn_id in [c for c, n in self.conn_rooms.items() if n <= 0]:
            del self.conn_rooms[conn_id]
        conns = {cid.encode() for cid in connection_ids}
        conns.update(cid.encode() for cid in self.conn_rooms)
        return Repair(
            leaves=leaves,
            joins=joins,
            unregisters=[cid.decode() for cid in remote_conns.difference(conns)],
            registers=[cid.decode() for cid in conns.difference(remote_conns)],
        )

    def _discard(self, room: str, members: set[str], conn_id: str) -> None:
        members.discard(conn_id)
        self.conn_rooms[conn_id] -= 1
        if not members:
            del self.rooms[room]
