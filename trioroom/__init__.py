"""trioroom: a Trio-native, room-based WebSocket server, wire-compatible with wsrooms.

The public API::

    from trioroom import Server, Settings, Message, Connection, Reject

and a client: ``async with trioroom.connect(url) as root: ...`` (see
:mod:`trioroom.client`); :mod:`trioroom.testing` runs a server in memory for tests.
Every exception is in :mod:`trioroom.exceptions` and exported here.
"""

from __future__ import annotations

from .client import connect
from .codes import ROOT, CloseCode, ErrorCode
from .connection import Connection
from .exceptions import (
    ClientError,
    ConnectionClosed,
    ConnectionRejected,
    FrameError,
    Reject,
    RequestError,
    RequestFailed,
    ServerError,
    TrioroomError,
)
from .handshake import Request
from .metrics import Metrics
from .protocol import RESERVED_EVENTS, Message
from .server import Server
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "RESERVED_EVENTS",
    "ROOT",
    "ClientError",
    "CloseCode",
    "Connection",
    "ConnectionClosed",
    "ConnectionRejected",
    "ErrorCode",
    "FrameError",
    "Message",
    "Metrics",
    "Reject",
    "Request",
    "RequestError",
    "RequestFailed",
    "Server",
    "ServerError",
    "Settings",
    "TrioroomError",
    "__version__",
    "connect",
]
