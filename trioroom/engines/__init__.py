"""The I/O engines, side by side; :mod:`.base` says what each provides."""

from __future__ import annotations

from .base import Endpoint, Transport

__all__ = ["Endpoint", "Transport"]
