"""ASGI applications for the ASGI engine's tests: trioroom alone, and mounted in a web app.

Each web application has an HTTP route (``GET /hello``), serves the
JavaScript client's directory at ``/client/`` (for the browser tests), and
mounts trioroom at ``/rooms``: its WebSocket endpoint is ``/rooms/ws``, on
the same port as the routes. ``app`` is trioroom alone, for
``hypercorn --worker-class trio tests.asgi_apps:app``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from trioroom import Server

JS_DIR = Path(__file__).resolve().parent.parent / "js"
HELLO = "hello from the web app"
#: Where the web applications mount trioroom.
MOUNT = "/rooms"


def make_app() -> Any:
    """trioroom alone, with a ``ping`` handler answering ``pong``."""
    server = Server()

    @server.on("ping")
    async def ping(conn: Any, msg: Any) -> None:
        await conn.send("pong", msg.payload, room=msg.room)

    return server.asgi_app()


#: ``hypercorn --worker-class trio tests.asgi_apps:app``
app = make_app()


def make_quart_app(server: Server) -> Any:
    """A Quart-Trio application with trioroom mounted at :data:`MOUNT`."""
    from hypercorn.middleware.dispatcher import TrioDispatcherMiddleware
    from quart import send_from_directory
    from quart_trio import QuartTrio

    web = QuartTrio(__name__)

    @web.get("/hello")
    async def hello() -> str:
        return HELLO

    @web.get("/client/<path:name>")
    async def client(name: str) -> Any:
        return await send_from_directory(JS_DIR, name)

    # Requests below /rooms go to trioroom, the rest to Quart; lifespan
    # events reach both (trioroom's runs its backplane).
    web.asgi_app = TrioDispatcherMiddleware(  # type: ignore[method-assign]
        {MOUNT: server.asgi_app(), "": web.asgi_app}
    )
    return web


def make_starlette_app(server: Server) -> Any:
    """A Starlette application with trioroom mounted at :data:`MOUNT`."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    rooms = server.asgi_app()

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse(HELLO)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # Starlette does not pass lifespan on to mounted apps.
        async with rooms.lifespan():
            yield

    return Starlette(
        routes=[
            Route("/hello", hello),
            Mount(MOUNT, app=rooms),
            Mount("/client", app=StaticFiles(directory=JS_DIR)),
        ],
        lifespan=lifespan,
    )
