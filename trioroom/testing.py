"""Test your handlers without sockets: a server and clients over in-memory streams.

::

    async def test_echo() -> None:          # pytest-trio; autojump_clock works too
        server = trioroom.Server()

        @server.on("echo")
        async def echo(conn, msg):
            await conn.send("echoed", msg.payload, room=msg.room)

        async with trioroom.testing.open_test_server(server) as harness:
            root = await harness.connect()
            await root.send("echo", "hi")
            msg = await root.receive()
            assert (msg.event, msg.text) == ("echoed", "hi")

Each :meth:`TestHarness.connect` makes a ``trio.testing.memory_stream_pair``,
serves one end with :meth:`Server.handle_stream` (the native engine, with the
server's settings, hooks and limits) and connects a :class:`trioroom.client.Client`
to the other end with trio-websocket. Nothing touches the network or real
time, so tests run under pytest-trio's ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from .client import Client, connect
from .client.groups import reraise, single_error
from .server import Server

__all__ = ["TestHarness", "open_test_server"]


class TestHarness:
    """A server under test and the clients connected to it.

    Made by :func:`open_test_server`; clients stay connected until the
    ``async with`` block ends (or until you call ``await client.aclose()``).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, server: Server, server_nursery: trio.Nursery, client_nursery: trio.Nursery
    ) -> None:
        #: The :class:`~trioroom.Server` under test.
        self.server = server
        self._server_nursery = server_nursery
        self._client_nursery = client_nursery
        self._closing = trio.Event()

    def close_clients(self) -> None:
        """Close every client of the harness (with 1000, after its queued frames)."""
        self._closing.set()

    async def connect(
        self,
        path: str | None = None,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        **options: Any,
    ) -> Client:
        """Connect a new client; returns once it has its ID (root ``join_ack``).

        Args:
            path: Request target, query string included (default the
                server's ``settings.path``, e.g. ``"/ws?token=abc"``).
            headers: Extra upgrade headers (``Cookie``, ``Origin``...).
            options: Passed to :func:`trioroom.connect` (``queue_size``...).

        Raises :class:`~trioroom.client.ConnectionRejected` when the server
        refuses the handshake.
        """
        target = path if path is not None else self.server.settings.path
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._server_nursery.start_soon(self.server.handle_stream, server_stream)
        url = f"ws://trioroom.test{target}"
        client: Client = await self._client_nursery.start(
            self._run_client, url, client_stream, headers, options
        )
        return client

    async def _run_client(
        self,
        url: str,
        stream: trio.abc.Stream,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
        options: dict[str, Any],
        *,
        task_status: trio.TaskStatus[Client],
    ) -> None:
        async with connect(url, stream=stream, headers=headers, **options) as client:
            task_status.started(client)
            await self._closing.wait()


@asynccontextmanager
async def open_test_server(
    server: Server | None = None, **settings: Any
) -> AsyncIterator[TestHarness]:
    """Run ``server`` (or ``Server(**settings)``) for the block; yields a :class:`TestHarness`.

    When the block ends, every client closes (with 1000, after its queued
    frames) and then the server's connections are cancelled; their cleanup
    and disconnect hooks still run. An exception raised by the block, a
    client handler or the server's tasks propagates as itself, not wrapped in
    an exception group.
    """
    server = server or Server(**settings)
    try:
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as client_nursery:
                harness = TestHarness(server, server_nursery, client_nursery)
                try:
                    yield harness
                finally:
                    harness.close_clients()
            server_nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = single_error(group)
        if error is None:
            raise
        reraise(error)
