"""Faults on a node's Redis connections, with a real Redis behind a TCP proxy.

* A cross-node message is delivered once, even when its node sends it twice:
  the publisher sends a batch again when its Redis connection broke before
  Redis answered, though Redis may have run it, and the receiving node tells
  the copy by the origin's sequence number. The proxy stops passing Redis's
  replies back on the connection that carried a chosen message, so the node
  times out on a batch that Redis did run.
* A server cancelled while its Redis connections drop ends cleanly: the
  connection errors of that moment do not escape into the caller's nursery.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable

import pytest
import trio

from trioroom import Message, Server
from trioroom.backplane.redis import RedisBackplane

from . import test_redis
from .test_extension import CuttableProxy
from .test_redis import LIMIT, StartCluster, join_all
from .wire import wait_until

redis_server = test_redis.redis_server
prefix = test_redis.prefix
start_cluster = test_redis.start_cluster

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)


class MutingProxy(CuttableProxy):
    """A proxy to Redis that goes deaf on the connection that sent ``trap``.

    The bytes carrying ``trap`` reach Redis, which runs them; from then on
    nothing Redis sends on that connection comes back. The node's other
    connections (subscriber, heartbeat) and later ones are untouched.
    """

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port))
        self.trap: bytes | None = None
        self.muted = 0

    async def _handle(self, node: trio.SocketStream) -> None:
        redis = await trio.open_tcp_stream(*self.target)
        self.sockets += [node, redis]
        muted = False

        async def up() -> None:
            nonlocal muted
            async for data in node:
                if self.trap is not None and self.trap in data:
                    # Before the bytes go: the answer may come back at once.
                    self.trap = None
                    self.muted += 1
                    muted = True
                await redis.send_all(data)

        async def down() -> None:
            async for data in redis:
                if not muted:
                    await node.send_all(data)

        async def pump(direction: Callable[[], Awaitable[None]], done: trio.CancelScope) -> None:
            try:
                await direction()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            done.cancel()  # either side gone: the connection is over

        async with redis, trio.open_nursery() as nursery:
            nursery.start_soon(pump, up, nursery.cancel_scope)
            nursery.start_soon(pump, down, nursery.cancel_scope)


async def test_a_batch_sent_again_after_redis_ran_it_is_delivered_once(
    nursery: trio.Nursery, start_cluster: StartCluster, redis_server: test_redis.RedisProcess
) -> None:
    proxy = MutingProxy(redis_server.port)
    _, port = await nursery.start(proxy.run)
    (a_node,) = await start_cluster(
        1,
        url=f"redis://127.0.0.1:{port}/0",
        root_notices=False,
        backplane_options={"op_timeout": 0.5},
    )
    (b_node,) = await start_cluster(1, root_notices=False)
    a, b = await a_node.connect(), await b_node.connect()
    await join_all("lobby", [a, b])
    # A room message, then a direct message: each reaches Redis, which runs
    # it, while A hears no answer.
    for i, (message, received) in enumerate(
        [
            (
                Message("lobby", "chat", "", "", b"room-1"),
                Message("lobby", "chat", "", a.id, b"room-1"),
            ),
            (
                Message("lobby", "dm", b.id, "", b"direct-2"),
                Message("lobby", "dm", b.id, a.id, b"direct-2"),
            ),
        ]
    ):
        sessions = a_node.backplane.stats.sessions
        proxy.trap = received.payload
        await a.send(message)
        assert await b.recv() == received
        assert proxy.muted == i + 1
        # A gives up on the batch, reconnects and sends it again; B skips the copy.
        await wait_until(lambda: a_node.backplane.stats.sessions > sessions, LIMIT)  # noqa: B023
        await wait_until(lambda: b_node.server.metrics.backplane_duplicates == i + 1, LIMIT)  # noqa: B023
    await a.send(Message("lobby", "chat", "", "", b"after"))
    # Nothing came between: the next thing B's member gets is what came after.
    with trio.fail_after(LIMIT):
        assert await b.recv() == Message("lobby", "chat", "", a.id, b"after")
    assert b_node.server.metrics.backplane_duplicates == 2
    assert b_node.backplane.stats.duplicates == 2
    assert a_node.server.metrics.frames_dropped.total() == 0


async def test_a_server_cancelled_as_its_redis_connections_drop_ends_cleanly(
    nursery: trio.Nursery, redis_server: test_redis.RedisProcess, prefix: str
) -> None:
    proxy = MutingProxy(redis_server.port)
    _, port = await nursery.start(proxy.run)
    # The drop and the cancellation meet at various points of the shutdown.
    for attempt in range(20):
        backplane = RedisBackplane(f"redis://127.0.0.1:{port}/0", prefix=f"{prefix}{attempt}")
        server = Server(backplane=backplane)
        with trio.fail_after(LIMIT), trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                await inner.start(server.serve, "127.0.0.1", 0)
                assert backplane.connected
                proxy.cut()
                await trio.sleep(attempt / 10_000)
                scope.cancel()
        assert scope.cancelled_caught, attempt
