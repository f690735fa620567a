from __future__ import annotations

from typing import Any

import pytest
import trio

from trioroom import Server

from .wire import StartServer


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> StartServer:
    """Start a Server on 127.0.0.1, port 0, inside the test's nursery."""

    async def start(
        server: Server | None = None, **settings: Any
    ) -> tuple[Server, tuple[str, int]]:
        server = server or Server(**settings)
        address = await nursery.start(server.serve, "127.0.0.1", 0)
        return server, address

    return start
