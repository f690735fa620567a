"""wsrooms server on ``trio_websocket.serve_websocket``.

Rooms as in ``_wsrooms.Hub``; deliveries are a plain loop of
``await conn.send_message(...)`` over the members, in the sender's task.

    python benchmarks/peers/trio_websocket_peer.py --host 127.0.0.1 --port 8003
"""

from __future__ import annotations

import functools
import os
import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wsrooms import Hub, announce, parse_args

hub = Hub()


async def deliver(deliveries: list) -> None:
    for targets, message in deliveries:
        for conn in targets:
            try:
                await conn.send_message(message)
            except ConnectionClosed:
                pass


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    _cid, deliveries = hub.connect(ws)
    try:
        await deliver(deliveries)
        while True:
            msg = await ws.get_message()
            if isinstance(msg, str):
                msg = msg.encode()
            await deliver(hub.handle(ws, msg))
    except ConnectionClosed:
        pass
    finally:
        gone = hub.disconnect(ws)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await deliver(gone)


async def main() -> None:
    args = parse_args(__doc__)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_websocket, handler, args.host, args.port, None, max_message_size=65536
            )
        )
        announce(args.host, server.port, "trio_websocket")


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
