"""trioroom's trio-websocket engine (``Server.handle_trio_websocket``) on ``serve_websocket``.

The same server and settings as the ``trioroom`` peer; only the engine
differs: trio-websocket parses HTTP and WebSocket frames (wsproto), and each
outbound message goes through its ``send_message``.

    python benchmarks/peers/trioroom_trio_websocket.py --host 127.0.0.1 --port 8007
"""

from __future__ import annotations

import functools
import os
import sys

import trio
from trio_websocket import WebSocketRequest, serve_websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _trioroom_engine import make_server
from _wsrooms import announce, parse_args


async def main() -> None:
    args = parse_args(__doc__)
    server = make_server()

    async def handler(request: WebSocketRequest) -> None:
        await server.handle_trio_websocket(request)

    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            functools.partial(
                serve_websocket, handler, args.host, args.port, None, max_message_size=65536
            )
        )
        announce(args.host, ws_server.port, "trioroom trio-websocket engine")


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
