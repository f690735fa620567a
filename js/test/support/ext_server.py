"""A trioroom server with request handlers, for the JS client's extension tests.

``trioroom serve`` has no custom handlers, so the tests that need some start
this script instead. Like ``trioroom serve`` its first stdout line is
``trioroom serving on ws://HOST:PORT/ws``; SIGTERM or SIGINT shuts it down.

Handlers (for requests, ``src="?<ref>"``):

* ``add``: payload a JSON list of numbers; answers ``{"sum": total}``, or
  raises ``RequestError("nothing to add", "empty")`` for an empty list.
* ``crash``: raises a ``KeyError`` (answered ``handler_error``, no text).
* ``slow``: sleeps for the number of seconds in its payload, answers ``"done"``.
* ``count``: counts its calls per payload (a key); answers ``{"calls": n}``.
* ``calls``: answers ``{"calls": n}`` for the key in its payload, counting nothing.
* ``kick``: answers ``"bye"`` and kicks the caller (``Server.kick``: 4000).

``authorize_join`` refuses the room ``vip``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import trio

from trioroom import Connection, Message, RequestError, Server


def create_server(args: argparse.Namespace, nursery: trio.Nursery) -> Server:
    async def authorize_join(conn: Connection, room: str) -> bool:
        return room != "vip"

    options: dict[str, Any] = {
        "resume_window": args.resume_window,
        "request_timeout": args.request_timeout,
        "rate_limit": 1e6,
        "rate_burst": 10**6,
    }
    if args.allowed_origins:
        options["allowed_origins"] = tuple(args.allowed_origins.split(","))
    server = Server(authorize_join=authorize_join, **options)

    @server.on("add")
    async def add(conn: Connection, msg: Message) -> Any:
        numbers = json.loads(msg.payload)
        if not numbers:
            raise RequestError("nothing to add", "empty")
        return {"sum": sum(numbers)}

    @server.on("crash")
    async def crash(conn: Connection, msg: Message) -> None:
        raise KeyError("secret internals")

    calls: dict[bytes, int] = {}

    @server.on("count")
    async def count(conn: Connection, msg: Message) -> Any:
        calls[msg.payload] = calls.get(msg.payload, 0) + 1
        return {"calls": calls[msg.payload]}

    @server.on("calls")
    async def read_calls(conn: Connection, msg: Message) -> Any:
        return {"calls": calls.get(msg.payload, 0)}

    @server.on("kick")
    async def kick(conn: Connection, msg: Message) -> str:
        nursery.start_soon(server.kick, conn.id)
        return "bye"

    @server.on("slow")
    async def slow(conn: Connection, msg: Message) -> str:
        await trio.sleep(float(msg.payload or b"0"))
        return "done"

    return server


async def main(args: argparse.Namespace) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = create_server(args, nursery)
            host, port = await nursery.start(server.serve, args.host, args.port)
            sys.stdout.write(f"trioroom serving on ws://{host}:{port}{server.settings.path}\n")
            sys.stdout.flush()
            async for _ in signals:
                await server.shutdown(grace=2)
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--resume-window", type=float, default=30.0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--allowed-origins", default="")
    trio.run(main, parser.parse_args())
