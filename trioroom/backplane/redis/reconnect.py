"""Keeping a session with Redis up: reconnection with backoff, and its log."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import trio
from coredis import Redis
from coredis.connection._tcp import TCPLocation
from coredis.connection._uds import UnixDomainSocketLocation

from ...metrics import Metrics
from .stats import RedisStats

__all__ = ["keep_session"]

# One logger for the whole Redis backplane: operators filter on this name.
logger = logging.getLogger("trioroom.backplane.redis")

#: First pause after a failure; it doubles up to ``reconnect_max``.
_FIRST_DELAY = 0.1


async def keep_session(
    client: Redis[bytes],
    session: Callable[[Redis[bytes]], Awaitable[None]],
    *,
    url: str,
    stats: RedisStats,
    metrics: Metrics,
    attempted: trio.Event,
    op_timeout: float,
    reconnect_max: float,
) -> None:
    """Run ``session`` again and again, with exponential backoff and jitter between.

    A session counts in ``stats.sessions`` once connected. Losing Redis, and
    the first failed attempt of an outage, count in ``metrics.backplane_errors``
    and log a warning; later attempts log at debug level. ``attempted`` is set
    after the first attempt, whatever its outcome.
    """
    delay = _FIRST_DELAY
    attempts = 0
    while True:
        sessions = stats.sessions
        try:
            with trio.fail_after(op_timeout):
                await _probe(client)
            await session(client)
        except Exception as exc:
            if attempts == 0 or stats.sessions > sessions:
                metrics.backplane_errors += 1
            if stats.sessions > sessions:
                # Connected, then lost: a state change worth a warning.
                logger.warning(
                    "Redis backplane: lost %s (%s); serving local connections only "
                    "until it is back",
                    url,
                    _describe(exc),
                )
                attempts = 0
            elif attempts == 0:
                logger.warning(
                    "Redis backplane: cannot reach %s (%s); serving local connections "
                    "only, retrying",
                    url,
                    _describe(exc),
                )
            else:
                logger.debug("Redis backplane: reconnect failed: %s", _describe(exc))
        except BaseExceptionGroup as group:
            cancelled, errors = group.split(trio.Cancelled)
            if cancelled is None or errors is None:
                raise
            # Cancelled while the connection failed under the session (it is
            # closing along with us): the cancellation is the outcome, and the
            # error must not escape into the caller's nursery.
            logger.debug("Redis backplane: failed while cancelled: %s", _describe(errors))
            raise cancelled from None
        finally:
            attempted.set()
        if attempts == 0:
            delay = _FIRST_DELAY
        attempts += 1
        await trio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, reconnect_max)


async def _probe(client: Redis[bytes]) -> None:
    """Fail fast and quietly while Redis is unreachable.

    coredis logs a traceback for each refused connection; a plain socket
    connect first keeps the log readable during an outage.
    """
    location = client.connection_pool.location
    stream: trio.abc.Stream
    if isinstance(location, TCPLocation):
        stream = await trio.open_tcp_stream(location.host, location.port)
    elif isinstance(location, UnixDomainSocketLocation):
        stream = await trio.open_unix_socket(location.path)
    else:  # pragma: no cover - other location kinds
        return
    await stream.aclose()


def _describe(exc: BaseException) -> str:
    """One line for an exception, every member of a group included."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
