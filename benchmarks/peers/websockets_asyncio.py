"""wsrooms server on the ``websockets`` asyncio implementation.

Rooms as in ``_wsrooms.Hub``; every delivery goes through
``websockets.asyncio.server.broadcast()`` (no awaiting, no backpressure: the
frame is serialized once per connection and written to its transport).

    python benchmarks/peers/websockets_asyncio.py --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import asyncio
import os
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wsrooms import Hub, announce, parse_args

hub = Hub()


def deliver(deliveries: list) -> None:
    for targets, message in deliveries:
        broadcast(targets, message)


async def handler(ws: ServerConnection) -> None:
    _cid, deliveries = hub.connect(ws)
    deliver(deliveries)
    try:
        async for msg in ws:
            if isinstance(msg, str):
                msg = msg.encode()
            deliver(hub.handle(ws, msg))
    except ConnectionClosed:
        pass
    finally:
        deliver(hub.disconnect(ws))


async def main() -> None:
    args = parse_args(__doc__)
    async with serve(
        handler,
        args.host,
        args.port,
        compression=None,
        max_size=65536,
        backlog=4096,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        announce(args.host, port, "websockets_asyncio")
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
