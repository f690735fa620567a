"""Exception groups of the client's nurseries: find the one real error, raise it as itself."""

from __future__ import annotations

from typing import NoReturn

import trio

__all__ = ["reraise", "single_error"]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error in a nursery's exception group, ignoring ``Cancelled``."""
    real = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    return real[0] if len(real) == 1 else None


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` without replacing its ``__context__`` by the group."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
