"""trioroom's ASGI engine (``Server.asgi_app()``) served by Hypercorn's trio worker.

The same server and settings as the ``trioroom`` peer (``python -m trioroom
serve --no-root-notices --root-member-list-limit 1`` with the benchmark's
per-address limits lifted and its GC settings); only the engine differs:
Hypercorn parses HTTP and WebSocket frames (wsproto) and hands each message
to trioroom through ASGI.

    python benchmarks/peers/asgi_hypercorn.py --host 127.0.0.1 --port 8006
"""

from __future__ import annotations

import functools
import os
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _trioroom_engine import make_server
from _wsrooms import announce, parse_args


async def main() -> None:
    args = parse_args(__doc__)
    server = make_server()
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    # Connections arrive in bursts: the backlog trio's listeners (trioroom
    # serve's) ask for, not Hypercorn's default of 100.
    config.backlog = 0xFFFF
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, server.asgi_app(), config, mode="asgi")
        )
        port = int(binds[0].rpartition(":")[2])
        announce(args.host, port, "trioroom asgi (hypercorn trio worker)")


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
