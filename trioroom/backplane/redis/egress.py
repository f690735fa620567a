"""The ordered queue of commands for Redis and the task that pipelines it.

Room publishes, direct messages and membership updates all go through one
queue and one publisher connection: Redis delivers the messages of one
publisher connection to one subscriber in order, so FIFO per sender and
recipient holds across nodes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from coredis.commands.request import CommandRequest
from coredis.connection import BaseConnection
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import NoScriptError

from ...metrics import Metrics
from .stats import RedisStats

__all__ = ["DIRECT_MESSAGE", "MEMBERSHIP", "PUBLISH", "Op", "Publisher", "command"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")

# Kinds of queued operations. Publishes and direct messages are kept in the
# outbox when Redis goes away; membership is registered again instead.
PUBLISH = 0
DIRECT_MESSAGE = 1
MEMBERSHIP = 2


class Op:
    """One command in the ordered publisher queue."""

    __slots__ = ("args", "event", "failed", "kind", "result", "since")

    def __init__(self, args: tuple[Any, ...], kind: int, wait: bool = False) -> None:
        self.args = args
        self.kind = kind
        #: Set once Redis answered (or the session ended), for callers that wait.
        self.event: trio.Event | None = trio.Event() if wait else None
        self.failed = False
        #: Redis's answer, for callers that wait (``None`` until then).
        self.result: Any = None
        #: When it entered the outbox (0: never).
        self.since = 0.0

    @property
    def size(self) -> int:
        """Bytes of the message a publish carries (its last argument)."""
        return len(self.args[-1])


def command(*args: Any) -> CommandRequest[Any]:
    """A raw command for a connection's request batch."""
    return CommandRequest(args[0], *args[1:], execution_parameters={})


class Publisher:
    """The queue of commands for Redis, drained in order by :meth:`run`.

    Args:
        stats: Counts batches and commands.
        fail: Counts failed cross-node operations (what, how many).
        max_batch: Commands per pipelined write.
        op_timeout: Bound on each write and its replies.
    """

    def __init__(
        self,
        stats: RedisStats,
        fail: Callable[[str, int], None],
        *,
        max_batch: int,
        op_timeout: float,
    ) -> None:
        self.stats = stats
        self.fail = fail
        self.max_batch = max_batch
        self.op_timeout = op_timeout
        #: Commands waiting, oldest first.
        self.queue: deque[Op] = deque()
        self._wake: trio.Event | None = None

    def push(self, op: Op) -> Op:
        """Queue ``op`` (no checkpoint); return it."""
        self.queue.append(op)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        return op

    def fail_all(self) -> list[Op]:
        """Fail every queued command (waiters wake); return the publishes among them.

        Membership is registered again by the next session from local state;
        publishes go to the outbox, in order.
        """
        queue = self.queue
        unsent = [op for op in queue if op.kind != MEMBERSHIP]
        while queue:
            op = queue.popleft()
            op.failed = True
            if op.event is not None:
                op.event.set()
        return unsent

    async def run(self, pub: BaseConnection, metrics: Metrics) -> None:
        """Drain the queue in order, one pipelined write per batch.

        Raises when the connection fails; what was not answered goes back to
        the head of the queue first.
        """
        queue = self.queue
        stats = self.stats
        while True:
            if not queue:
                wake = self._wake = trio.Event()
                await wake.wait()
                continue
            count = min(len(queue), self.max_batch)
            ops = [queue.popleft() for _ in range(count)]
            try:
                results = await pub.create_request_batch(
                    [command(*op.args) for op in ops], timeout=self.op_timeout
                )
            except BaseException:
                # Maybe sent, maybe not: back to the queue, which the outbox
                # takes over. A message Redis did run before the connection
                # broke goes again; receivers skip it by its sequence number.
                queue.extendleft(reversed(ops))
                raise
            stats.batches += 1
            stats.commands += count
            fatal: BaseException | None = None
            failed = 0
            retry: list[Op] = []
            for op, result in zip(ops, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, (RedisConnectionError, TimeoutError, NoScriptError)):
                        fatal = fatal or result
                        if op.kind != MEMBERSHIP:
                            retry.append(op)  # to the outbox, via the queue
                            continue
                    else:
                        logger.debug("Redis command failed: %r", result)
                    op.failed = True
                    if op.kind != MEMBERSHIP:
                        failed += 1
                elif op.kind == DIRECT_MESSAGE and isinstance(result, int) and result <= 0:
                    metrics.frames_dropped["unknown_dst"] += 1
                if op.event is not None:
                    op.result = result
                    op.event.set()
            if failed:
                self.fail("cross-node send", failed)
            if fatal is not None:
                queue.extendleft(reversed(retry))
                raise fatal
