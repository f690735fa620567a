"""Logging with context: every record can carry a connection ID and a room.

Records from trioroom have ``conn_id`` (and, where it applies, ``room`` and
``event``) as attributes, so any formatter can show them; :class:`JsonFormatter`
writes one JSON object per line with them as keys.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["BoundedLog", "ConnectionLogger", "JsonFormatter", "TextFormatter", "escape_controls"]

_CONTEXT = ("conn_id", "room", "event", "node")

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: any
# of them in a client-chosen name could start a forged line in a text log.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with control characters written as ``\\xNN``/``\\uNNNN`` escapes."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that merges its context into each call's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class TextFormatter(logging.Formatter):
    """``time level logger [conn_id room event] message``.

    Control characters in the message and the context are escaped, so that a
    room or event name chosen by a client cannot forge a log line; tracebacks
    keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{key}={escape_controls(str(getattr(record, key)))}"
            for key in _CONTEXT
            if getattr(record, key, None)
        )
        line = super().format(record)
        if context:
            head, sep, tail = line.partition(" - ")
            return f"{head} [{context}]{sep}{tail}" if sep else f"{line} [{context}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the trioroom context as keys."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            value = getattr(record, key, None)
            if value:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


class BoundedLog:
    """Log repeated events at a bounded rate: the first of each key per interval.

    For drops a client can cause at will (rate limits, refused frames): each is
    counted in the metrics anyway, and a log line per drop would let one client
    fill the disk. Records suppressed since the last one of a key are counted,
    and the next record that gets through says how many there were.
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # key -> (time of the last record written, records suppressed since)
        self._state: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Write the record unless one of ``key`` was written within ``interval``.

        Returns whether it was written. Keys are few and fixed (a reason, not a
        connection ID), so the state stays small.
        """
        now = self._clock()
        last, suppressed = self._state.get(key, (None, 0))
        if last is not None and now - last < self.interval:
            self._state[key] = (last, suppressed + 1)
            return False
        self._state[key] = (now, 0)
        if suppressed:
            msg = f"{msg} ({suppressed} more like this in the last {self.interval:g}s not logged)"
        self.logger.log(level, msg, *args, **kwargs)
        return True
