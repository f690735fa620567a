"""Application hooks: ``async`` callables run when connections open, close, join and leave."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .metrics import Metrics

__all__ = ["HOOKS", "Hooks"]

logger = logging.getLogger("trioroom.server")

#: The hook names, in the order of a connection's life.
HOOKS = ("connect", "join", "leave", "disconnect")

Hook = Callable[..., Awaitable[None]]


class Hooks:
    """The hooks registered on one server, by name."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._hooks: dict[str, list[Hook]] = {name: [] for name in HOOKS}

    def add(self, name: str, hook: Hook) -> None:
        self._hooks[name].append(hook)

    def __contains__(self, name: str) -> bool:
        """Whether any hook is registered under ``name``.

        Callers ask first: most servers have no hooks, and a coroutine per
        join and leave is not free.
        """
        return bool(self._hooks[name])

    async def run(self, name: str, *args: Any, limit: float | None = None) -> None:
        """Run the hooks of ``name`` in order; one that fails is logged and counted.

        With ``limit``, each hook is cancelled after that many seconds.
        """
        for hook in self._hooks[name]:
            try:
                if limit is None:
                    # Join and leave hooks run in the caller's own scope: no
                    # cancel scope per hook call on that path.
                    await hook(*args)
                    continue
                # Each hook has its own deadline: one that hangs must not
                # starve the hooks registered after it.
                with trio.move_on_after(limit) as scope:
                    await hook(*args)
            except Exception:
                self._metrics.handler_errors += 1
                logger.exception("%s hook failed", name, extra=_context(args))
            else:
                if scope.cancelled_caught:
                    self._metrics.hook_timeouts += 1
                    logger.warning(
                        "%s hook %s.%s overran %gs: cancelled",
                        name,
                        getattr(hook, "__module__", "?"),
                        getattr(hook, "__qualname__", repr(hook)),
                        limit,
                        extra=_context(args),
                    )


def _context(args: tuple[Any, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args and isinstance(getattr(args[0], "id", None), str):
        extra["conn_id"] = args[0].id
    if len(args) > 1 and isinstance(args[1], str):
        extra["room"] = args[1]
    return extra
