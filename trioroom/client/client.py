"""The client's trio layer: :class:`Client`, :func:`connect`, and resuming after a drop.

The session's state and rules are in :mod:`.session` (sans-I/O); this module
runs them: it opens sockets through :class:`~.link.Link`, tries again with
backoff when a socket drops, and ends everything when the connection ends.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import trio
import trio_websocket

from ..codes import RESUMABLE_CLOSE_CODES, ROOT, CloseCode
from ..exceptions import ClientError, ConnectionClosed, ConnectionRejected
from .backoff import Backoff
from .dispatch import Dispatcher, ErrorHandler, SessionLostHandler
from .groups import reraise, single_error
from .link import AttemptFailed, CannotResume, Link, LinkOptions
from .membership import Membership, State
from .outbox import Outbox
from .room import Inbox, Room
from .session import Session, SessionLost

__all__ = ["Client", "connect"]

logger = logging.getLogger("trioroom.client")

EH = TypeVar("EH", bound=ErrorHandler)
SH = TypeVar("SH", bound=SessionLostHandler)


class Client(Room):
    """A connection to a wsrooms server, and its ``root`` room.

    Made by :func:`connect`. As a :class:`Room` it is ``root``: iterate over it
    for events sent on ``root``, including server-originated direct messages.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        queue_size: int = 256,
        max_message_size: int = 1 << 20,
        close_timeout: float = 5.0,
        extension: bool = False,
        resume: bool = True,
        resume_timeout: float | None = None,
        handshake_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        ack_every: int = 64,
        ack_interval: float = 5.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if ack_every < 1:
            raise ValueError("ack_every must be at least 1")
        for option, value in (
            ("handshake_timeout", handshake_timeout),
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("ack_interval", ack_interval),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{option} must be positive")
        if resume_timeout is not None and resume_timeout < 0:
            raise ValueError("resume_timeout must not be negative")
        root: Membership[Inbox] = Membership(ROOT)
        session = Session(root, ack_every=ack_every)
        outbox = Outbox(queue_size)
        super().__init__(session, outbox, root, queue_size)
        self.url = url
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self._queue_size = queue_size
        self._close_timeout = close_timeout
        self._resume = resume
        self._resume_timeout = resume_timeout
        self._dispatcher = Dispatcher(queue_size)
        self._link = Link(
            LinkOptions(
                url=url,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in items],
                ssl_context=ssl_context,
                max_message_size=max_message_size,
                close_timeout=close_timeout,
                extension=extension,
                handshake_timeout=handshake_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                ack_interval=ack_interval,
            ),
            session,
            outbox,
            self._dispatcher,
        )
        self._background: trio.CancelScope | None = None
        # A stream handed to connect() cannot be opened again: no resumption then.
        self._can_reconnect = True

    def __repr__(self) -> str:
        return f"<Client {self._session.id or '(connecting)'} {self.url}>"

    @property
    def session(self) -> Session[Inbox]:
        """The session's state: rooms, requests waiting for answers, frames received.

        The sans-I/O core the client runs (:class:`trioroom.client.session.Session`);
        read it, do not change it.
        """
        return self._session

    @property
    def extended(self) -> bool:
        """``True`` when the server selected the ``trioroom.v1`` subprotocol."""
        return self._session.extended

    @property
    def resumes(self) -> int:
        """How many times the session was resumed after a dropped connection."""
        return self._session.resumes

    @property
    def session_losses(self) -> list[SessionLost]:
        """Every :class:`SessionLost` so far, oldest first."""
        return self._session.losses

    @property
    def rooms(self) -> dict[str, Room]:
        """The rooms joined now, by name (``root`` included)."""
        return {
            name: membership.handle.room
            for name, membership in self._session.rooms.items()
            if membership.state is State.JOINED
        }

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection ended (``None`` while it is open)."""
        return self._outbox.reason

    @property
    def connected(self) -> bool:
        """``False`` while a dropped connection is being resumed, and once closed."""
        return self._outbox.socket_up and not self._outbox.finished.is_set()

    async def wait_closed(self) -> ConnectionClosed:
        """Wait until the connection ends; return why (it does not raise)."""
        await self._outbox.finished.wait()
        assert self._outbox.reason is not None
        return self._outbox.reason.copy()

    def on_error(self, handler: EH) -> EH:
        """Register ``async handler(error)`` for errors that answer no request.

        ``error`` is a :class:`ServerError` (``rate_limited``, ``malformed``,
        ``message_too_big``, ``not_a_member`` and ``unknown_destination`` of
        a plain :meth:`Room.send`, a room refused after a lost session...).
        Use as ``client.on_error(fn)`` or as a decorator. It runs in the
        dispatcher like the handlers of :meth:`Room.on`. Without a handler
        such errors are logged (``trioroom.client`` logger, warning).
        """
        self._dispatcher.error_handler = handler
        return handler

    def on_session_lost(self, handler: SH) -> SH:
        """Register ``async handler(lost)``, called when a session could not be resumed.

        ``lost`` is a :class:`SessionLost`. When it runs, the client already
        has its new ID and its joins of ``lost.rooms`` are on their way (they
        go out before anything the handler sends). Use as a decorator too.
        Without a handler the event is logged; :attr:`session_losses` keeps
        them all anyway.
        """
        self._dispatcher.session_lost_handler = handler
        return handler

    async def join(self, name: str) -> Room:
        """Join a room; returns its :class:`Room` once ``join_ack`` arrived.

        Joining a room already joined returns the same object at once.

        A server refusing a join (``authorize_join``, limits) tells an
        extended client: ``join`` raises :class:`RequestFailed` with code
        ``join_refused``. On a plain connection it sends no answer, so bound
        the wait: ``with trio.fail_after(5): await join(...)``.

        Cancellation: if the call is cancelled before ``join_ack``, the client
        forgets the room and, when the late ``join_ack`` arrives, sends
        ``leave`` for it, so the server ends up without the membership too.
        If the ``join_ack`` was already handled when the cancellation is
        delivered, the room stays joined (see :attr:`rooms`).

        Raises ``ValueError`` for an empty name, :class:`ConnectionClosed` if
        the connection ends first.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("room name must be a non-empty string")
        self._outbox.check_open()
        session = self._session
        membership = session.rooms.get(name)
        if membership is None:
            membership = Membership(name)
            Room(session, self._outbox, membership, self._queue_size)  # attaches itself
            # Synchronous from here to the wait (see Room.leave).
            self._outbox.send_control(session.join(membership))
        elif membership.state is State.JOINED:
            await trio.lowlevel.checkpoint()
            return membership.handle.room
        inbox = membership.handle
        inbox.waiters += 1
        try:
            await inbox.wait_while(membership, State.JOINING)
        finally:
            inbox.waiters -= 1
            if inbox.waiters == 0:
                # Every caller gave up before join_ack: the session forgets the
                # room and answers its join_ack (extended: its reply) with a leave.
                session.abandon_join(membership)
        if membership.refusal is not None:
            raise membership.refusal.copy()
        if membership.state is not State.JOINED:
            raise self._outbox.closed_error()
        return inbox.room

    async def aclose(self) -> None:
        """Close the connection: frames already sent go out first, then close 1000.

        Waits for the server's close frame at most ``close_timeout`` seconds.
        Idempotent. Leaving the ``async with connect(...)`` block calls it.
        Closing while a dropped connection is being resumed stops the resume
        and drops the frames still queued.
        """
        self._outbox.begin_close()
        with trio.move_on_after(self._close_timeout):
            await self._outbox.writer_done.wait()
        self._finish(None)
        if self._background is not None:
            self._background.cancel()

    async def leave(self) -> None:
        """Not possible for ``root``: raises ``ValueError``."""
        await Room.leave(self)

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, stream: trio.abc.Stream | None = None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Connect, and serve the connection until it ends (:func:`connect` runs this).

        Started with ``nursery.start``: ready once the root ``join_ack`` arrived.
        """
        self._can_reconnect = stream is None
        try:
            async with trio.open_nursery() as nursery:
                self._background = nursery.cancel_scope
                nursery.start_soon(self._dispatcher.run)
                error = await self._link.serve(stream, ready=task_status.started)
                while error is not None and self._resumable(error):
                    error, given_up = await self._resume_session(error)
                    if given_up:
                        break
                self._finish(error)
                nursery.cancel_scope.cancel()
        finally:
            self._finish(None)

    def _finish(self, error: ConnectionClosed | None) -> None:
        """The connection ended (``error`` is ``None`` for a local close)."""
        reason = self._outbox.finish(error)
        if reason is None:
            return  # it had ended already
        self._session.end(error, reason)
        self._dispatcher.close()

    def _resumable(self, error: ConnectionClosed) -> bool:
        return (
            self._resume
            and self._can_reconnect
            and self._session.resumable
            and not self._outbox.closing
            and error.code in RESUMABLE_CLOSE_CODES
        )

    async def _resume_session(
        self, cause: ConnectionClosed
    ) -> tuple[ConnectionClosed | None, bool]:
        """Reconnect with the resume token until a socket is up or time is over.

        Returns how the next socket ended (``None``: closed by us) and
        ``False``, or why the session could not be taken up again and
        ``True``.
        """
        window = self._resume_timeout
        if window is None:
            window = self._session.resume_window
        backoff = Backoff(window, trio.current_time())
        logger.info("%s: resuming the session", cause)
        while not self._outbox.closing:
            try:
                return await self._link.serve(None), False
            except BaseExceptionGroup as group:
                error = single_error(group)
                if error is None:
                    raise
            except Exception as exc:
                error = exc
            if isinstance(error, trio_websocket.ConnectionRejected):
                status = error.status_code
                problem = f"handshake rejected with HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    return ConnectionClosed(
                        CloseCode.ABNORMAL_CLOSURE, f"could not resume: {problem}"
                    ), True
            elif isinstance(error, CannotResume):
                return ConnectionClosed(
                    CloseCode.ABNORMAL_CLOSURE, f"could not resume: {error}"
                ), True
            elif isinstance(
                error, OSError | ClientError | trio_websocket.HandshakeError | AttemptFailed
            ):
                problem = str(error) or type(error).__name__
            else:
                reraise(error)
            delay = backoff.failed(trio.current_time())
            if delay is None:
                text = (
                    f"not resumed within {window:g}s ({backoff.attempts} attempts; last: {problem})"
                )
                return ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, text), True
            logger.info(
                "resume attempt %d failed (%s); next in %.2fs", backoff.attempts, problem, delay
            )
            await trio.sleep(delay)
        return None, True


@asynccontextmanager
async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    stream: trio.abc.Stream | None = None,
    queue_size: int = 256,
    max_message_size: int = 1 << 20,
    close_timeout: float = 5.0,
    extension: bool = False,
    resume: bool = True,
    resume_timeout: float | None = None,
    handshake_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float = 20.0,
    ack_every: int = 64,
    ack_interval: float = 5.0,
) -> AsyncIterator[Client]:
    """Connect to a wsrooms server; yields the :class:`Client` (the ``root`` room).

    Returns from ``async with`` once the root ``join_ack`` arrived, so
    ``client.id`` is known. Leaving the block closes cleanly (see
    :meth:`Client.aclose`).

    Args:
        url: ``ws://host:port/path?query`` or ``wss://...``. Browsers
            authenticate with the query string or cookies, so can you.
        headers: Extra HTTP headers for the upgrade (``Cookie``, ``Origin``,
            ``Authorization``).
        ssl_context: For ``wss://`` URLs (default: the system's trust store).
        stream: Talk over this already connected trio stream instead of
            opening a TCP connection (``url`` then only gives the ``Host``
            header and the path); :mod:`trioroom.testing` uses it. The
            client closes it when the connection ends. Such a client cannot
            reconnect, so it does not resume sessions.
        queue_size: Bound of each room's unread messages, of pending handler
            calls and of outbound data frames (see :mod:`trioroom.client`).
        max_message_size: Larger messages from the server close the
            connection with 1009.
        close_timeout: How long closing waits for the server's close frame.
        extension: Offer the ``trioroom.v1`` subprotocol. If the server
            selects it (:attr:`Client.extended`), the session is resumed
            after a drop, :meth:`Room.request` works, refused joins raise
            and other errors reach :meth:`Client.on_error`. Otherwise, and
            with ``False``, the client speaks the plain protocol.
        resume: On an extended connection, resume the session when the
            connection drops (close codes in :data:`RESUMABLE_CLOSE_CODES`,
            or no pong to the client's ping).
        resume_timeout: How long after a drop the client starts new resume
            attempts (default: the ``resume_window`` the server announced).
        handshake_timeout: Bound of the connect and of each resume attempt:
            TCP connection, upgrade and the server's first frames, up to the
            root ``join_ack``. A first connect that takes longer raises
            :class:`ConnectionClosed` (1006).
        ping_interval: On an extended connection, ping the server this often;
            ``None`` for no pings.
        ping_timeout: A pong that takes longer means the connection is lost.
        ack_every: Acknowledge the server's frames after this many...
        ack_interval: ...and at least this often, in seconds, while some
            are unacknowledged (the server then frees its replay buffer).

    Raises:
        ConnectionRejected: The server answered the upgrade with an HTTP error.
        ConnectionClosed: The connection closed before the root ``join_ack``,
            or that did not arrive within ``handshake_timeout`` (code 1006).
        OSError: The TCP connection failed (``ssl.SSLError`` for TLS errors).
        ValueError: ``url`` is not a ``ws://`` or ``wss://`` URL.
    """
    client = Client(
        url,
        headers=headers,
        ssl_context=ssl_context,
        queue_size=queue_size,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        extension=extension,
        resume=resume,
        resume_timeout=resume_timeout,
        handshake_timeout=handshake_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        ack_every=ack_every,
        ack_interval=ack_interval,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run, stream)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        error = single_error(group)
        if error is None:
            raise
        if isinstance(error, trio_websocket.ConnectionRejected):
            raise ConnectionRejected(error.status_code, error.body or b"") from None
        if isinstance(error, trio_websocket.HandshakeError):
            raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, str(error)) from error
        reraise(error)
