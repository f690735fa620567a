"""A cross-node message is delivered once, even when its node sends it twice.

The publisher sends a batch again when its Redis connection broke before
Redis answered, though Redis may have run it; the receiving node tells the
copy by the origin's sequence number and skips it. The nodes share a real
Redis; node A reaches it through a TCP proxy that stops passing Redis's
replies back, so A times out on a batch that Redis did run.
"""

from __future__ import annotations

import shutil

import pytest
import trio

from trioroom import Message

from . import test_redis
from .test_client_extension import start_proxy
from .test_redis import LIMIT, StartCluster, join_all
from .wire import wait_until

redis_server = test_redis.redis_server
prefix = test_redis.prefix
start_cluster = test_redis.start_cluster

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server on PATH"
)


async def test_a_batch_sent_again_after_redis_ran_it_is_delivered_once(
    nursery: trio.Nursery, start_cluster: StartCluster, redis_server: test_redis.RedisProcess
) -> None:
    proxy, (host, port) = await start_proxy(nursery, ("127.0.0.1", redis_server.port))
    (a_node,) = await start_cluster(
        1, url=f"redis://{host}:{port}/0", root_notices=False, backplane_options={"op_timeout": 0.5}
    )
    (b_node,) = await start_cluster(1, root_notices=False)
    a, b = await a_node.connect(), await b_node.connect()
    await join_all("lobby", [a, b])
    sessions = a_node.backplane.stats.sessions
    # From now on A hears nothing from Redis on the connections it has.
    for link in proxy.links:
        link.swallow_down = True
    await a.send(Message("lobby", "chat", "", "", b"once"))
    await a.send(Message("lobby", "dm", b.id, "", b"once too"))
    # Redis ran both: B's member has them while A still waits for the answer.
    assert await b.recv() == Message("lobby", "chat", "", a.id, b"once")
    assert await b.recv() == Message("lobby", "dm", b.id, a.id, b"once too")
    # A gives up on the batch, reconnects (new connections pass replies) and
    # sends it again.
    await wait_until(
        lambda: a_node.backplane.stats.sessions > sessions and a_node.backplane.connected, LIMIT
    )
    await a.send(Message("lobby", "chat", "", "", b"after"))
    # The copies were skipped: the next thing B's member gets is what came after.
    with trio.fail_after(LIMIT):
        assert await b.recv() == Message("lobby", "chat", "", a.id, b"after")
    assert b_node.server.metrics.backplane_duplicates == 2
    assert b_node.backplane.stats.duplicates == 2
    assert a_node.server.metrics.frames_dropped.total() == 0
