"""Shared wsrooms room logic for the benchmark peers (not the library).

Every peer server in this folder uses the same :class:`Hub`, so they all have
the same semantics as ``python -m trioroom serve --no-root-notices
--root-member-list-limit 1``:

* on connect: a new v4 UUID, membership of ``root``, a ``join_ack`` for
  ``root`` with ``src`` = the id (payload: the member list ``[id]``; no
  ``new_member``/``member_left`` notices for ``root``);
* ``join`` -> ``join_ack`` to the joiner (payload: JSON member list) and
  ``new_member`` to the other members;
* ``leave`` -> ``leave_ack`` to the leaver, ``member_left`` to the rest;
* ``dst`` set -> direct message to that connection, ``src`` rewritten;
* any other event -> broadcast to the room, sender excluded, ``src`` rewritten;
* disconnect -> ``member_left`` in the rooms it was in, empty rooms removed.

Hub methods return a list of ``(targets, message)`` pairs; each peer delivers
them the way its stack does (a queue, ``broadcast()``, a loop of awaits).
The same ``message`` bytes object goes to every target of a pair.
"""

from __future__ import annotations

import gc
import json
import struct
import uuid
from collections.abc import Hashable
from typing import Any

_U32 = struct.Struct(">I")
ROOT = "root"
RESERVED = frozenset({"join", "leave", "join_ack", "leave_ack", "new_member", "member_left"})

Deliveries = list[tuple[list[Any], bytes]]


def encode(room: str, event: str, dst: str, src: str, payload: bytes) -> bytes:
    r, e, d, s = room.encode(), event.encode(), dst.encode(), src.encode()
    return b"".join(
        (
            _U32.pack(len(r)),
            r,
            _U32.pack(len(e)),
            e,
            _U32.pack(len(d)),
            d,
            _U32.pack(len(s)),
            s,
            _U32.pack(len(payload)),
            payload,
        )
    )


def decode(data: bytes) -> tuple[str, str, str, str, bytes] | None:
    """Strict parse of one frame; None when malformed."""
    fields: list[bytes] = []
    off = 0
    n = len(data)
    try:
        for _ in range(5):
            if off + 4 > n:
                return None
            (ln,) = _U32.unpack_from(data, off)
            off += 4
            if off + ln > n:
                return None
            fields.append(data[off : off + ln])
            off += ln
        if off != n:
            return None
        return (
            fields[0].decode(),
            fields[1].decode(),
            fields[2].decode(),
            fields[3].decode(),
            fields[4],
        )
    except UnicodeDecodeError:
        return None


class Hub:
    """Rooms and ids. ``conn`` objects are opaque to the hub (any hashable)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Hashable] = {}
        self.ids: dict[Hashable, str] = {}
        self.rooms: dict[str, dict[Hashable, None]] = {}
        self.member_of: dict[Hashable, set[str]] = {}

    def connect(self, conn: Hashable) -> tuple[str, Deliveries]:
        cid = str(uuid.uuid4())
        self.by_id[cid] = conn
        self.ids[conn] = cid
        self.member_of[conn] = {ROOT}
        self.rooms.setdefault(ROOT, {})[conn] = None
        ack = encode(ROOT, "join_ack", "", cid, json.dumps([cid]).encode())
        return cid, [([conn], ack)]

    def disconnect(self, conn: Hashable) -> Deliveries:
        cid = self.ids.pop(conn, None)
        if cid is None:
            return []
        self.by_id.pop(cid, None)
        out: Deliveries = []
        for room in self.member_of.pop(conn, ()):
            members = self.rooms.get(room)
            if members is None:
                continue
            members.pop(conn, None)
            if not members:
                del self.rooms[room]
            elif room != ROOT:
                out.append((list(members), encode(room, "member_left", "", "", cid.encode())))
        return out

    def handle(self, conn: Hashable, data: bytes) -> Deliveries:
        frame = decode(data)
        cid = self.ids.get(conn)
        if frame is None or cid is None:
            return []
        room, event, dst, _src, payload = frame
        if event == "join":
            return self._join(conn, cid, room)
        if event == "leave":
            return self._leave(conn, cid, room)
        if event in RESERVED:
            return []
        if dst:
            target = self.by_id.get(dst)
            if target is None:
                return []
            return [([target], encode(room, event, dst, cid, payload))]
        members = self.rooms.get(room)
        if not members:
            return []
        targets = [m for m in members if m is not conn]
        if not targets:
            return []
        return [(targets, encode(room, event, "", cid, payload))]

    def _join(self, conn: Hashable, cid: str, room: str) -> Deliveries:
        if not room:
            return []
        members = self.rooms.setdefault(room, {})
        new = conn not in members
        members[conn] = None
        self.member_of[conn].add(room)
        ids = [self.ids[m] for m in members]
        out: Deliveries = [
            (
                [conn],
                encode(room, "join_ack", "", cid, json.dumps(ids, separators=(",", ":")).encode()),
            )
        ]
        if new and room != ROOT:
            others = [m for m in members if m is not conn]
            if others:
                out.append((others, encode(room, "new_member", "", "", cid.encode())))
        return out

    def _leave(self, conn: Hashable, cid: str, room: str) -> Deliveries:
        out: Deliveries = [([conn], encode(room, "leave_ack", "", cid, cid.encode()))]
        members = self.rooms.get(room)
        if members is None or conn not in members:
            return out
        del members[conn]
        self.member_of[conn].discard(room)
        if not members:
            del self.rooms[room]
        elif room != ROOT:
            out.append((list(members), encode(room, "member_left", "", "", cid.encode())))
        return out


def announce(host: str, port: int, name: str) -> None:
    """First stdout line: the URL, like ``python -m trioroom serve`` prints."""
    print(f"{name} listening on ws://{host}:{port}/ws", flush=True)


def parse_args(description: str) -> Any:
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--queue", type=int, default=256, help="per-connection queue bound (messages)")
    p.add_argument(
        "--gc-threshold",
        type=int,
        default=0,
        help="young-generation GC threshold, as trioroom serve's option (0: Python's default)",
    )
    args = p.parse_args()
    tune_gc(args.gc_threshold)
    return args


def tune_gc(threshold: int) -> None:
    """What ``trioroom serve --gc-threshold`` does (see trioroom.cli.tune_gc)."""
    if threshold > 0:
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)
