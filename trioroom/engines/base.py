"""What the engines and the server promise each other.

An engine turns some WebSocket implementation into :class:`Transport`
objects and hands each, once admitted, to an :class:`Endpoint` (the
:class:`~trioroom.Server`). The engines sit side by side in this package:

* :mod:`~trioroom.engines.native`: trioroom's own listener, websockets'
  sans-I/O protocol over trio streams, with the direct write path;
* :mod:`~trioroom.engines.trio_websocket`: requests from an application
  already serving trio-websocket;
* :mod:`~trioroom.engines.asgi`: an ASGI 3 application, for Hypercorn and
  the frameworks it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from websockets.http11 import Response

from ..admission import Admission
from ..handshake import Request
from ..metrics import Metrics
from ..settings import Settings

__all__ = ["Endpoint", "ProcessRequestCallback", "Transport"]

#: Answers plain HTTP requests (health checks, static files) before the
#: WebSocket upgrade; returns ``None`` to let the upgrade go on.
ProcessRequestCallback = Callable[[Request], Awaitable[Response | None]]


class Transport(Protocol):
    """What a connection needs from a WebSocket implementation.

    Only the connection's reader calls :meth:`receive` and
    :meth:`next_buffered`, and only its writer calls :meth:`write`;
    :meth:`send_now` may be called by any task, but only while the writer has
    nothing to write (see ``Connection._deliver``).
    """

    #: ``(code, reason)`` of the close frame the peer sent, once it did.
    peer_close: tuple[int, str] | None
    #: Set when the peer sent pings faster than allowed; the reader then ends.
    flooded: bool
    #: True when :meth:`send_now` can write without the writer (a plain socket).
    direct: bool

    @property
    def protocol_error(self) -> tuple[int, str] | None:
        """The close sent after the peer broke the protocol (1002, 1009), if any."""

    @property
    def unsent(self) -> int:
        """Bytes :meth:`send_now` left for the writer to write first."""

    def attach(self, wake_writer: Any) -> None:
        """Give the transport a callable that wakes the writer task."""

    async def receive(self) -> bytes | None:
        """The next complete message, or ``None`` once the peer is gone."""

    def next_buffered(self) -> bytes | None:
        """A message already read with the previous one, without waiting, or ``None``."""

    def send_now(self, data: bytes) -> bool:
        """Write without waiting (direct transports only); ``False`` if bytes are left.

        What is left is written by the next :meth:`write` or :meth:`close`,
        before anything else. Raises ``trio.BrokenResourceError`` when the
        peer is gone.
        """

    async def write(self, frames: list[bytes]) -> None:
        """Write WebSocket binary frames (and any pending control frames)."""

    async def ping(self) -> None:
        """Send a ping and return when its pong arrives."""

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        """Write ``pending`` frames, then close with ``code``; wait for the peer."""

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""


class Endpoint(Protocol):
    """What an engine needs of the server it feeds."""

    settings: Settings
    metrics: Metrics
    admission: Admission
    process_request: ProcessRequestCallback | None

    def handle_transport(
        self, transport: Transport, request: Request, claims: Any, *, extended: bool = False
    ) -> Awaitable[None]:
        """Serve an admitted connection until it closes (await what it returns)."""
