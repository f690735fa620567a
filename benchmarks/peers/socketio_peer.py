"""Rooms on python-socketio (asyncio, served by aiohttp).

The wsrooms semantics expressed as socket.io events (the load generator's
socket.io adapter speaks this; websocket transport only):

* client -> server: ``join`` (room); ``msg`` (room, event, payload);
  ``dm`` (dst, room, payload)
* server -> client: ``join_ack`` (room, id, members) to the joiner;
  ``new_member`` (room, id) to the other members; ``msg`` (room, event, src,
  payload) -- to the room except the sender (``skip_sid``), or to ``dst``.

The socket.io id of a client (``socket.id``) plays the part of the wsrooms id.

    python benchmarks/peers/socketio_peer.py --host 127.0.0.1 --port 8004
"""

from __future__ import annotations

import asyncio
import os
import sys

import socketio
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wsrooms import announce, parse_args

sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=65536)


@sio.on("join")
async def join(sid: str, room: str) -> None:
    if not isinstance(room, str) or not room:
        return
    await sio.enter_room(sid, room)
    members = [s for s, _eio in sio.manager.get_participants("/", room)]
    await sio.emit("join_ack", (room, sid, members), to=sid)
    await sio.emit("new_member", (room, sid), to=room, skip_sid=sid)


@sio.on("msg")
async def msg(sid: str, room: str, event: str, payload: object) -> None:
    await sio.emit("msg", (room, event, sid, payload), to=room, skip_sid=sid)


@sio.on("dm")
async def dm(sid: str, dst: str, room: str, payload: object) -> None:
    await sio.emit("msg", (room, "dm", sid, payload), to=dst)


async def main() -> None:
    args = parse_args(__doc__)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    announce(args.host, port, "socketio")
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
