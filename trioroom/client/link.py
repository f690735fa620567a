"""One WebSocket carrying the client's session (trio): open it, then serve it until it ends.

While the socket is up a nursery runs trio-websocket's reader and, here, a
**reader** that feeds every frame to the :class:`~.session.Session` and acts
on what it means, a **writer** that owns every write to the socket (so a
cancelled ``send`` never leaves half a frame), and on extended connections a
**heartbeat** and an **ack timer**.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence

import attrs
import trio
import trio_websocket

from ..codes import CloseCode
from ..exceptions import ConnectionClosed
from ..extension import SUBPROTOCOL
from .dispatch import Dispatcher
from .handshake import closed_by, host_and_resource, open_stream, upgrade
from .outbox import Outbox
from .pending import Outgoing, Pending, ack_frame
from .room import Inbox
from .session import Deliver, Event, Opened, Report, Send, Session, SessionLost

__all__ = ["AttemptFailed", "CannotResume", "Link", "LinkOptions"]

logger = logging.getLogger("trioroom.client")


class AttemptFailed(Exception):
    """A resume attempt failed in a way worth trying again."""


class CannotResume(Exception):
    """A resume attempt failed in a way that trying again cannot fix."""


@attrs.frozen
class LinkOptions:
    """The options of :func:`trioroom.connect` that concern each socket (see there)."""

    url: str
    headers: list[tuple[bytes, bytes]]
    ssl_context: ssl.SSLContext | None
    max_message_size: int
    close_timeout: float
    extension: bool
    handshake_timeout: float
    ping_interval: float | None
    ping_timeout: float
    ack_interval: float


class Link:
    """Opens the sockets of one client's session and serves each until it ends."""

    def __init__(
        self,
        options: LinkOptions,
        session: Session[Inbox],
        outbox: Outbox,
        dispatcher: Dispatcher,
    ) -> None:
        self._options = options
        self._session = session
        self._outbox = outbox
        self._dispatcher = dispatcher

    async def serve(
        self, stream: trio.abc.Stream | None, *, ready: Callable[[], object] | None = None
    ) -> ConnectionClosed | None:
        """Open one WebSocket and serve it until it ends; return why (``None``: we closed it).

        Without ``ready`` this is a resume attempt. Setting the socket up is
        bounded by ``handshake_timeout`` either way. Raises when the socket
        cannot be set up.
        """
        options = self._options
        session = self._session
        resuming = ready is None
        url = session.resume_url(options.url) if resuming else options.url
        ws: trio_websocket.WebSocketConnection | None = None
        outcome: ConnectionClosed | None = None
        heartbeat_failure: list[ConnectionClosed] = []
        try:
            async with trio.open_nursery() as nursery:
                # The first connect too: a server that accepts the TCP
                # connection and never opens the session must not hang connect().
                deadline = trio.current_time() + options.handshake_timeout
                opened: Opened | None = None
                with trio.CancelScope(deadline=deadline) as setup:
                    host, resource = host_and_resource(url, options.ssl_context, stream)
                    if stream is None:
                        stream = await open_stream(url, options.ssl_context)
                    ws = await upgrade(
                        nursery,
                        stream,
                        host,
                        resource,
                        subprotocols=[SUBPROTOCOL] if options.extension else None,
                        headers=options.headers,
                        max_message_size=options.max_message_size,
                    )
                    self._outbox.ws = ws
                    extended = ws.subprotocol == SUBPROTOCOL
                    if resuming and not extended:
                        raise CannotResume("the server no longer selects trioroom.v1")
                    session.start_socket(extended=extended, resuming=resuming)
                    opened = await self._read_opening(ws)
                if setup.cancelled_caught:
                    problem = f"no answer within {options.handshake_timeout:g}s (handshake_timeout)"
                    if resuming:
                        raise AttemptFailed(problem)
                    raise ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, problem)
                assert ws is not None and opened is not None
                if opened.not_resumed == "kicked":
                    with trio.move_on_after(options.close_timeout):
                        await ws.aclose(1000)
                    nursery.cancel_scope.cancel()
                    return ConnectionClosed(4000, "kicked while disconnected")
                if opened.resumed:
                    logger.info("session %s resumed", session.id)
                self._outbox.socket_up = True
                nursery.start_soon(self._writer, ws, opened.preamble, opened.probe)
                if session.extended and options.ping_interval is not None:
                    nursery.start_soon(
                        self._heartbeat,
                        ws,
                        options.ping_interval,
                        nursery.cancel_scope,
                        heartbeat_failure,
                    )
                if session.token is not None:
                    nursery.start_soon(self._ack_timer)
                if ready is not None:
                    ready()
                outcome = await self._reader(ws, opened.lost)
                nursery.cancel_scope.cancel()
        finally:
            self._outbox.socket_up = False
            with trio.CancelScope(shield=True):
                if ws is not None:
                    await trio.aclose_forcefully(ws)
                # trio-websocket leaves the stream open after a closing
                # handshake the server started: the client owns it.
                if stream is not None:
                    await trio.aclose_forcefully(stream)
        if heartbeat_failure:
            return heartbeat_failure[0]
        return outcome

    # -- inbound ------------------------------------------------------------------------------

    async def _read_opening(self, ws: trio_websocket.WebSocketConnection) -> Opened:
        """Read the frames that open a socket, up to the root ``join_ack`` or ``resumed``."""
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise closed_by(exc.reason) from None
            incoming = self._session.receive(data)
            opened: Opened | None = None
            for event in incoming.events:
                if isinstance(event, Opened):
                    opened = event
                else:
                    await self._act(event)
            if incoming.numbered:
                self._counted()
            if opened is not None:
                return opened

    async def _reader(
        self, ws: trio_websocket.WebSocketConnection, lost: SessionLost | None
    ) -> ConnectionClosed | None:
        if lost is not None:
            await self._dispatcher.session_lost(lost)
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if self._outbox.closing:
                    return None
                return closed_by(exc.reason)
            incoming = self._session.receive(data)
            for event in incoming.events:
                await self._act(event)
            if incoming.numbered:
                self._counted()

    async def _act(self, event: Event) -> None:
        """Do what a frame from the server asks for."""
        if isinstance(event, Deliver):
            await self._dispatcher.deliver(event)
        elif isinstance(event, Send):
            try:
                self._outbox.send_control(event.out)
            except ConnectionClosed:
                pass
        elif isinstance(event, Report):
            await self._dispatcher.server_error(event.error)

    def _counted(self) -> None:
        if self._session.count():
            self._outbox.queue_ack()

    async def _ack_timer(self) -> None:
        while True:
            await trio.sleep(self._options.ack_interval)
            if self._session.ack_interval_passed():
                self._outbox.queue_ack()

    async def _heartbeat(
        self,
        ws: trio_websocket.WebSocketConnection,
        interval: float,
        scope: trio.CancelScope,
        failure: list[ConnectionClosed],
    ) -> None:
        """Ping the server; a pong that does not come in time ends the socket (1006)."""
        timeout = self._options.ping_timeout
        dispatcher = self._dispatcher
        while True:
            await trio.sleep(interval)
            stalls = dispatcher.stalls
            with trio.move_on_after(timeout) as wait:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            # While the reader waits for the application, pongs are not read:
            # that is the application's slowness, not the network's.
            if wait.cancelled_caught and not dispatcher.stalling and stalls == dispatcher.stalls:
                logger.info("no pong within %gs: the connection is lost", timeout)
                failure.append(
                    ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, f"no pong within {timeout:g}s")
                )
                scope.cancel()
                return

    # -- outbound -----------------------------------------------------------------------------

    async def _writer(
        self,
        ws: trio_websocket.WebSocketConnection,
        preamble: Sequence[Outgoing],
        probe: Pending | None,
    ) -> None:
        outbox = self._outbox
        generation = self._session.generation
        todo = outbox.carry
        todo.extendleft(reversed(preamble))
        try:
            if probe is not None:
                answered = trio.Event()
                probe.watch(answered.set)
                if not await self._write(ws, probe.outgoing()):
                    return
                with trio.move_on_after(self._options.handshake_timeout):
                    await answered.wait()
                todo.extendleft(reversed(self._session.probe_answered(generation)))
            while True:
                if todo:
                    item = todo.popleft()
                else:
                    next_item = await outbox.next()
                    if next_item is None:
                        break
                    item = next_item
                if not await self._write(ws, item):
                    if item.frame:
                        todo.appendleft(item)  # first on the next socket
                    return
            # aclose(): everything queued is written; now the closing handshake.
            await ws.aclose(1000)
        finally:
            if outbox.closing:
                outbox.writer_done.set()

    async def _write(self, ws: trio_websocket.WebSocketConnection, item: Outgoing) -> bool:
        """Write one frame; ``False`` if the socket is closed and it was not written."""
        session = self._session
        frame = item.frame
        if not frame:
            count = session.take_ack()
            if count is None:
                return True
            try:
                await ws.send_message(ack_frame(count))
            except trio_websocket.ConnectionClosed:
                return False
            session.acknowledged(count)
            return True
        pending = session.writing(item.ref)
        try:
            await ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            if pending is not None:
                pending.written = None
            return False
        except BaseException:
            # Cancelled during the write: the frame may have gone out, so it
            # is not written again (a tracked one is settled by the probe).
            self._outbox.written(item)
            raise
        self._outbox.written(item)
        return True
