from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

from trioroom import Server

from .wire import StartServer, start_hypercorn

#: The engines the behaviour tests run on: trioroom's own, the
#: trio-websocket adapter (``Server.handle_trio_websocket``), and the ASGI
#: application (``Server.asgi_app``) under Hypercorn's trio worker.
ENGINES = ("native", "trio-websocket", "asgi")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "native_only: run only on the native engine (its own HTTP handling)"
    )
    config.addinivalue_line(
        "markers",
        "not_asgi(reason): not on the ASGI engine, for the reason given (what ASGI cannot do)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        native_only = metafunc.definition.get_closest_marker("native_only") is not None
        not_asgi = metafunc.definition.get_closest_marker("not_asgi") is not None
        engines = [e for e in ENGINES if not (e == "asgi" and not_asgi)]
        metafunc.parametrize("engine", ENGINES[:1] if native_only else engines)


@pytest.fixture
async def start_server(nursery: trio.Nursery, engine: str) -> StartServer:
    """Start a Server on 127.0.0.1, port 0, inside the test's nursery.

    Parametrised by ``engine``: the native listener (``Server.serve``), or
    trio-websocket's ``serve_websocket`` handing each request to
    ``Server.handle_trio_websocket``, or Hypercorn's trio worker serving
    ``Server.asgi_app()``. Mark a test ``native_only`` to skip the other
    engines, ``not_asgi`` to skip the ASGI one.
    """

    async def start(
        server: Server | None = None, **settings: Any
    ) -> tuple[Server, tuple[str, int]]:
        server = server or Server(**settings)
        if engine == "native":
            address = await nursery.start(server.serve, "127.0.0.1", 0)
            return server, address
        if engine == "asgi":
            return server, await start_hypercorn(nursery, server.asgi_app())
        srv = server

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            await srv.handle_trio_websocket(request)

        serve = partial(
            trio_websocket.serve_websocket,
            handler,
            "127.0.0.1",
            0,
            ssl_context=None,
            handler_nursery=nursery,
        )
        ws_server = await nursery.start(serve)
        return server, ("127.0.0.1", ws_server.port)

    return start
