"""trioroom: a Trio-native, room-based WebSocket server, wire-compatible with wsrooms.

The public API::

    from trioroom import Server, Settings, Message, Connection, Reject

and a client: ``async with trioroom.connect(url) as root: ...`` (see
:mod:`trioroom.client`); :mod:`trioroom.testing` runs a server in memory for tests.
"""

from __future__ import annotations

from .client import connect
from .connection import CloseCode, Connection
from .handshake import Reject, Request, RequestError
from .metrics import Metrics
from .protocol import RESERVED_EVENTS, FrameError, Message
from .server import Server
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "RESERVED_EVENTS",
    "CloseCode",
    "Connection",
    "FrameError",
    "Message",
    "Metrics",
    "Reject",
    "Request",
    "RequestError",
    "Server",
    "Settings",
    "__version__",
    "connect",
]
