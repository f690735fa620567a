"""Accepting connections on listeners, each served in a task of the caller's nursery.

Listeners that are plain TCP (``trio.SocketListener``) get a loop of ours:
one readiness wait, then up to :data:`ACCEPT_BATCH` non-blocking ``accept``
calls. ``trio.serve_listeners`` yields to the scheduler after every
connection it accepts and wraps each handler in a task frame that closes the
stream again with a checkpoint; on a server whose clients come and go, those
trips are a good part of what a connection costs (``docs/benchmarks.md``,
churn). Other listeners (TLS, your own) go through ``trio.serve_listeners``.

The handler must close the stream it is given (``native.serve_stream`` does,
synchronously for a plain socket).
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .log import BoundedLog

__all__ = ["ACCEPT_BATCH", "serve_listeners"]

logger = logging.getLogger("trioroom.server")

#: Connections accepted per readiness of a listening socket before yielding,
#: so a flood of connects cannot starve the connections already open.
ACCEPT_BATCH = 64
#: accept() errors that mean "out of resources for now": log, wait, retry.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long to wait after one of those (trio's ``serve_listeners`` waits as long).
CAPACITY_WAIT = 0.1
#: accept() errors about one failed connection, not the listener (trio ignores
#: the same ones in ``SocketListener.accept``).
IGNORED_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)


async def serve_listeners(
    listeners: Sequence[trio.abc.Listener[Any]],
    handler: Callable[[Any], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept on every listener until cancelled; ``handler(stream)`` runs in ``nursery``.

    Returns once every listener is closed; raises what an accept raised that
    is not about a single connection or a passing shortage.
    """
    plain = [lis for lis in listeners if type(lis) is trio.SocketListener]
    others = [lis for lis in listeners if type(lis) is not trio.SocketListener]
    # Out of descriptors, accept fails ten times a second until some are free.
    shortage_log = BoundedLog(logger)
    async with trio.open_nursery() as accepting:
        for listener in plain:
            accepting.start_soon(_accept_plain, listener, handler, nursery, shortage_log)
        if others:
            accepting.start_soon(_serve_others, others, handler, nursery)


async def _serve_others(
    listeners: list[trio.abc.Listener[Any]],
    handler: Callable[[Any], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


async def _accept_plain(
    listener: trio.SocketListener,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    shortage_log: BoundedLog,
) -> None:
    # A stdlib socket object on the listener's own descriptor: its accept()
    # returns at once (the descriptor is non-blocking) where the trio
    # socket's would checkpoint. Readiness is awaited on the trio socket, so
    # a listener its owner closes ends this loop (trio tells its waiters);
    # the descriptor number is never used after that.
    listening = listener.socket
    alias = stdlib_socket.socket(fileno=listening.fileno())
    alias.setblocking(False)
    from_stdlib = trio.socket.from_stdlib_socket
    try:
        while listening.fileno() >= 0:
            try:
                await trio.lowlevel.wait_readable(listening)
            except trio.ClosedResourceError:
                return
            for _ in range(ACCEPT_BATCH):
                try:
                    accepted, _address = alias.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in IGNORED_ERRNOS:
                        continue
                    if exc.errno in CAPACITY_ERRNOS:
                        shortage_log.log(
                            logging.ERROR,
                            errno.errorcode[exc.errno],
                            "accept returned %s (%s); retrying in %s seconds",
                            errno.errorcode[exc.errno],
                            os.strerror(exc.errno),
                            CAPACITY_WAIT,
                        )
                        await trio.sleep(CAPACITY_WAIT)
                        break
                    raise
                nursery.start_soon(handler, trio.SocketStream(from_stdlib(accepted)))
    finally:
        # The descriptor is the listener's: never closed here.
        alias.detach()
