"""Disconnect hooks are bounded: a hung hook cannot stop a graceful shutdown (issue 14)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trioroom import Connection, Server

from .wire import memory_client, wait_until


async def test_a_hung_disconnect_hook_is_cut_off_and_named(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(ping_interval=None, hook_timeout=3)
    # Never set by the server: only the test's own give-up below ends the
    # hook, so a server that does not bound hooks fails instead of hanging.
    release = trio.Event()
    after: list[str] = []

    @server.on_disconnect
    async def hangs(conn: Connection) -> None:
        await release.wait()

    @server.on_disconnect
    async def runs_after(conn: Connection) -> None:
        after.append(conn.id)

    async def give_up() -> None:
        await trio.sleep(1000)
        release.set()

    nursery.start_soon(give_up)
    start = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="trioroom"):
        # The connection's task runs in this nursery: leaving it means the
        # server is really done with the connection, hooks included.
        async with trio.open_nursery() as connections:
            client = await memory_client(server, connections)
            await server.shutdown()
    elapsed = trio.current_time() - start
    assert not release.is_set(), "shutdown waited for the hung hook"
    assert elapsed < server.settings.shutdown_timeout + 3 + 1
    # Later hooks still run.
    assert after == [client.id]
    assert server.metrics.hook_timeouts == 1
    (record,) = [r for r in caplog.records if "hook" in r.getMessage()]
    assert "test_a_hung_disconnect_hook_is_cut_off_and_named.<locals>.hangs" in (
        record.getMessage()
    )
    assert getattr(record, "conn_id", None) == client.id


async def test_a_hook_within_its_deadline_is_not_cut_off(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=None, hook_timeout=3)
    finished: list[str] = []

    @server.on_disconnect
    async def slow(conn: Connection) -> None:
        await trio.sleep(2.5)
        finished.append(conn.id)

    client = await memory_client(server, nursery)
    await client.close()
    await wait_until(lambda: finished == [client.id])
    assert server.metrics.hook_timeouts == 0
