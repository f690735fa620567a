"""A Trio client for trioroom (and any server speaking the wsrooms protocol).

Built on trio-websocket's client::

    async with trioroom.connect("ws://127.0.0.1:8080/ws") as root:
        lobby = await root.join("lobby")          # returns once join_ack arrived
        await lobby.send("chat", "hello")         # broadcast to the other members
        async for msg in lobby:                   # custom events of that room
            print(msg.src, msg.event, msg.text)

``connect`` yields a :class:`Client`, which is also the :class:`Room` object of
``root`` (the room every connection is in). See ``docs/client.md``.

With ``extension=True`` the client offers trioroom's ``trioroom.v1``
subprotocol (``docs/protocol.md``). When the server selects it, the client
counts and acknowledges the server's frames, resumes the session after a
dropped connection (same ID, rooms and member lists, no message lost or
repeated), gets answers to :meth:`Room.request`, and hears about refused
joins and other errors. Servers that do not select it are spoken to in the
plain protocol.

How it runs: inside the ``async with`` a small nursery runs a **dispatcher**
that runs the handlers registered with :meth:`Room.on`, one at a time, in
arrival order, and, for each WebSocket in turn (one, unless sessions are
resumed), trio-websocket's reader, a **reader** that decodes frames and
routes them by their room field, and a **writer** that owns every write to
the socket (so a cancelled ``send`` never leaves half a frame).

Flow control: each room queues at most ``queue_size`` unread messages, and the
dispatcher at most ``queue_size`` pending handler calls. When a queue is full
the reader waits, so the client stops reading from the socket: the server's
outbound queue for this connection fills up and the server applies its
slow-consumer policy (by default it closes the connection with 4001, which
surfaces here as :class:`ConnectionClosed`). Read the rooms you joined, or
register handlers for their events.

How the package is built (one job per module): ``session`` is the sans-I/O
core (the session's state and what each frame means; no trio, no sockets, no
clock) and ``backoff`` the delays between resume attempts; the trio layer is
``client`` (:class:`Client`, :func:`connect`, resuming after a drop), ``link``
(one WebSocket: reader, writer, heartbeat, ack timer), ``handshake`` (TCP,
TLS and the upgrade), ``outbox`` (outbound frames and their credits),
``dispatch`` (handlers and the rooms' queues) and ``room`` (:class:`Room`).
"""

from __future__ import annotations

from ..codes import RESUMABLE_CLOSE_CODES
from ..exceptions import (
    ClientError,
    ConnectionClosed,
    ConnectionRejected,
    RequestFailed,
    ServerError,
)
from .client import Client, connect
from .dispatch import ErrorHandler, SessionLostHandler
from .room import MessageHandler, Room
from .session import SessionLost

__all__ = [
    "RESUMABLE_CLOSE_CODES",
    "Client",
    "ClientError",
    "ConnectionClosed",
    "ConnectionRejected",
    "ErrorHandler",
    "MessageHandler",
    "RequestFailed",
    "Room",
    "ServerError",
    "SessionLost",
    "SessionLostHandler",
    "connect",
]
