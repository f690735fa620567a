"""Logging with context: every record can carry a connection ID and a room.

Records from trioroom have ``conn_id`` (and, where it applies, ``room`` and
``event``) as attributes, so any formatter can show them; :class:`JsonFormatter`
writes one JSON object per line with them as keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["ConnectionLogger", "JsonFormatter", "TextFormatter"]

_CONTEXT = ("conn_id", "room", "event", "node")


class ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that merges its context into each call's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class TextFormatter(logging.Formatter):
    """``time level logger [conn_id room event] message``."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in _CONTEXT if getattr(record, key, None)
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
