"""The server: accept, admit and wire connections to the hub; the public API.

A :class:`Server` holds no global state; run as many as you like, each inside a
nursery of yours::

    server = trioroom.Server()

    @server.on("ping")
    async def ping(conn, msg):
        await conn.send("pong", msg.payload, room=msg.room)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 8080)

The layers (``docs/concepts.md``): an engine (:mod:`trioroom.engines`) turns a
socket into a transport; :class:`~trioroom.admission.Admission` decides who
may connect; each :class:`~trioroom.Connection` runs its nursery; the
:class:`~trioroom.hub.Hub` applies the rules of ``docs/protocol.md`` and
returns effects, which this module performs: writes, backplane publishes,
handler and hook calls, closes. Only this module awaits on the rules' behalf
(``authorize_join``, the backplane, handlers).
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar, Unpack, cast

import attrs
import trio

from . import accept
from .admission import Admission, AuthorizeCallback
from .backplane import Backplane, LocalBackplane
from .budget import Budget
from .codes import ROOT, CloseCode, ErrorCode
from .connection import Connection, ConnectionContext, check_close
from .dispatch import AuthorizeJoinCallback, Dispatcher, Handler
from .engines import native
from .engines.asgi import ASGIApp
from .engines.base import ProcessRequestCallback, Transport
from .handover import SessionMover
from .handshake import Request
from .hooks import Hooks
from .hub import Hub, Sessions
from .lifecycle import Lifecycle
from .log import BoundedLog
from .metrics import Metrics
from .outbound import OutboundBatch
from .protocol import RESERVED_EVENTS
from .settings import Settings, SettingsOverrides
from .wsframe import binary_frame

__all__ = [
    "AuthorizeCallback",
    "AuthorizeJoinCallback",
    "Handler",
    "ProcessRequestCallback",
    "Server",
]

logger = logging.getLogger("trioroom.server")

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


class Server:
    """A room server. See the module docstring for an example.

    Args:
        settings: All tunables. Keyword arguments override single fields
            (``Server(root_notices=False)``); their names, types and defaults
            are those of :class:`~trioroom.Settings`.
        authorize: ``async (request) -> claims``, run before the upgrade.
            Raise :class:`~trioroom.Reject` (or return ``None``/``False``) to
            refuse with an HTTP status (401 by default). The claims are
            available as ``conn.claims``.
        authorize_join: ``async (conn, room) -> bool``; a refused join adds no
            membership and notifies nobody.
        process_request: ``async (request) -> Response | None`` answering plain
            HTTP requests on the same port.
        backplane: Cross-process delivery; in-process by default.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        authorize: AuthorizeCallback | None = None,
        authorize_join: AuthorizeJoinCallback | None = None,
        process_request: ProcessRequestCallback | None = None,
        backplane: Backplane | None = None,
        **overrides: Unpack[SettingsOverrides],
    ) -> None:
        settings = settings or Settings()
        if overrides:
            # (Checked by the signature; attrs' converters confuse mypy here.)
            settings = attrs.evolve(settings, **cast(dict[str, Any], overrides))
        self.settings = settings
        self.metrics = Metrics()
        self.process_request = process_request
        backplane = backplane or LocalBackplane()
        self.admission = Admission(settings, authorize, lambda: len(self.hub))
        # Drops a client can cause at will: logged at a bounded rate, by reason.
        self._drop_log = BoundedLog(logging.getLogger("trioroom.connection"))
        #: The room rules and membership (sans-I/O).
        self.hub: Hub[Connection] = Hub(settings, self.metrics, drop_log=self._drop_log)
        self._budget = Budget(settings.max_buffered_bytes)
        #: Sessions of the trioroom.v1 extension.
        self.sessions: Sessions[Connection] = Sessions(settings, self._budget)
        self._batch = OutboundBatch()
        self._hooks = Hooks(self.metrics)
        self._dispatch = Dispatcher(
            settings, self.metrics, self.hub, backplane, self._hooks, self._batch
        )
        self._dispatch.authorize_join = authorize_join
        parts = (settings, self.metrics, self.admission, self.hub, self.sessions)
        self._lifecycle = Lifecycle(*parts, self._dispatch, self._hooks)
        self._context = ConnectionContext(
            settings=settings,
            metrics=self.metrics,
            budget=self._budget,
            batch=self._batch,
            drop_log=self._drop_log,
            handle=self._dispatch.handle,
            broadcast=self.broadcast,
        )
        #: Moves sessions between nodes (the backplane's ``Node.handover``).
        self.handover = SessionMover(*parts, self._lifecycle, self._context, self._dispatch)
        self._lifecycle.remote_resume = self.handover.resume
        self._accept_scopes: set[trio.CancelScope] = set()
        self._serve_scopes: set[trio.CancelScope] = set()
        self._backplane_running = False

    @property
    def authorize(self) -> AuthorizeCallback | None:
        """The ``authorize`` callback (settable)."""
        return self.admission.authorize

    @authorize.setter
    def authorize(self, callback: AuthorizeCallback | None) -> None:
        self.admission.authorize = callback

    @property
    def backplane(self) -> Backplane:
        """Cross-process delivery (settable before the server serves)."""
        return self._dispatch.backplane

    @backplane.setter
    def backplane(self, backplane: Backplane) -> None:
        self._dispatch.backplane = backplane

    @property
    def authorize_join(self) -> AuthorizeJoinCallback | None:
        """The ``authorize_join`` callback (settable)."""
        return self._dispatch.authorize_join

    @authorize_join.setter
    def authorize_join(self, callback: AuthorizeJoinCallback | None) -> None:
        self._dispatch.authorize_join = callback

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` began: new requests get 503."""
        return self.admission.shutting_down

    # -- registration ------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Register ``async handler(conn, msg)`` for a custom event.

        Only the handler runs for that event: nothing is broadcast unless it
        does so itself. Raises ``ValueError`` for empty, reserved or already
        registered names.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("event name must be a non-empty string")
        if event in RESERVED_EVENTS:
            raise ValueError(f"event {event!r} is reserved by the protocol; pick another name")
        if event in self._dispatch.handlers:
            raise ValueError(f"a handler for event {event!r} is already registered")

        def register(handler: Handler) -> Handler:
            if event in self._dispatch.handlers:
                raise ValueError(f"a handler for event {event!r} is already registered")
            self._dispatch.handlers[event] = handler
            self.hub.handled.add(event)
            return handler

        return register

    def on_connect(self, hook: H) -> H:
        """Register ``async hook(conn)``, run after the connection joined ``root``."""
        self._hooks.add("connect", hook)
        return hook

    def on_disconnect(self, hook: H) -> H:
        """Register ``async hook(conn)``; ``conn.close_code``/``disconnect_reason`` say why.

        The hook runs even when the connection was cancelled, and is cancelled
        itself after ``settings.hook_timeout`` seconds.
        """
        self._hooks.add("disconnect", hook)
        return hook

    def on_join(self, hook: H) -> H:
        """Register ``async hook(conn, room)``, run after each new membership."""
        self._hooks.add("join", hook)
        return hook

    def on_leave(self, hook: H) -> H:
        """Register ``async hook(conn, room)``, run after each ended membership."""
        self._hooks.add("leave", hook)
        return hook

    # -- serving -------------------------------------------------------------

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host``:``port`` until :meth:`shutdown` or cancellation.

        Use with ``nursery.start``, which returns the bound ``(host, port)``;
        port 0 picks a free port.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(self.serve_listeners, listeners)
            host_name, port_number = addresses[0][:2]
            task_status.started((host_name, port_number))

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on listeners you made (``trio.SSLListener`` for TLS).

        ``nursery.start`` returns the listeners' local addresses.
        """
        serve_scope: trio.CancelScope | None = None
        try:
            # Leaving the block waits for every connection task; shutdown()
            # cancels it once they are closed.
            async with trio.open_nursery() as nursery:
                serve_scope = nursery.cancel_scope
                self._serve_scopes.add(serve_scope)
                await self.start_backplane(nursery)
                accept_scope = trio.CancelScope()
                self._accept_scopes.add(accept_scope)
                addresses = [_listener_address(lis) for lis in listeners]
                loopback_only = all(_is_loopback(address) for address in addresses)
                nursery.start_soon(self._accept, listeners, nursery, accept_scope, loopback_only)
                task_status.started(addresses)
        finally:
            if serve_scope is not None:
                self._serve_scopes.discard(serve_scope)

    async def _accept(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        nursery: trio.Nursery,
        scope: trio.CancelScope,
        loopback_only: bool,
    ) -> None:
        handler = partial(self.handle_stream, loopback_only=loopback_only)
        try:
            with scope:
                await accept.serve_listeners(listeners, handler, nursery)
        finally:
            self._accept_scopes.discard(scope)
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            # shutdown() cancels the serve scopes once every connection is
            # closed, not here: a connection gone from the hub may still be
            # leaving its rooms through the backplane, in this nursery.

    async def start_backplane(self, nursery: trio.Nursery) -> None:
        """Run the backplane in ``nursery`` unless it runs already (engines without listeners)."""
        if not self._backplane_running:
            self._backplane_running = True
            await nursery.start(self._run_backplane)

    async def _run_backplane(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.backplane.run(self, task_status=task_status)
        finally:
            self._backplane_running = False

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, close every connection with 1001, and return.

        Queued frames are written before the close frame; disconnect hooks
        run. Connections still open after ``grace`` seconds (default
        ``settings.shutdown_timeout``) are cancelled.
        """
        self.admission.shutting_down = True
        for scope in list(self._accept_scopes):
            scope.cancel()
        connections = list(self.hub.members())
        for conn in connections:
            conn.abort(CloseCode.GOING_AWAY, "server shutting down", "shutdown", graceful=True)
        deadline = self.settings.shutdown_timeout if grace is None else grace
        with trio.move_on_after(deadline):
            for conn in connections:
                await conn.closed.wait()
        # Past the deadline: cancel what is left; each still runs its cleanup
        # (bounded by close_timeout) so hooks fire and rooms empty.
        for conn in connections:
            conn.abort(CloseCode.GOING_AWAY, "server shutting down", "shutdown")
        with trio.move_on_after(self.settings.close_timeout + 1):
            for conn in connections:
                await conn.closed.wait()
        for scope in list(self._serve_scopes):
            scope.cancel()

    # -- engines and admission ----------------------------------------------------

    def handle_stream(
        self, stream: trio.abc.Stream, *, loopback_only: bool = False
    ) -> Awaitable[None]:
        """Serve one client on an accepted byte stream (TCP, TLS or in-memory).

        ``loopback_only``: the stream came from listeners bound only to
        loopback, so only loopback ``Host`` names are accepted unless
        ``allowed_hosts`` is set (against DNS rebinding). Never raises.
        """
        # The coroutine itself, not awaited in one of ours: an idle connection
        # keeps every coroutine frame of its chain (see handle_transport).
        return native.serve_stream(self, stream, loopback_only=loopback_only)

    async def handle_trio_websocket(self, request: Any) -> None:
        """Serve a ``trio_websocket.WebSocketRequest`` (from ``serve_websocket``).

        Admits it like the native engine (:meth:`admit`; a
        :class:`~trioroom.Reject` becomes ``request.reject(status)``), accepts
        it and serves it until it closes. Never raises for a failing
        connection. See :mod:`trioroom.engines.trio_websocket`.
        """
        from .engines.trio_websocket import serve_trio_websocket

        await serve_trio_websocket(self, request)

    async def admit(self, request: Request) -> Any:
        """Decide whether a WebSocket request may connect; return its claims.

        The origin policy (403), shutdown and connection limits (503, 429) and
        ``authorize`` (401 unless it chose another status), in that order;
        raises :class:`~trioroom.Reject` to refuse. The request's slot in
        ``max_connections_per_address`` is reserved before ``authorize`` runs;
        pass the request on to :meth:`handle_transport`, or call
        :meth:`release_admission`.
        """
        return await self.admission.admit(request)

    def client_request(self, request: Request) -> Request:
        """``request`` with the client's address, if its peer is a trusted proxy.

        ``remote_address`` becomes the address the proxy forwarded
        (``settings.forwarded_allow_ips``); ``peer_address`` keeps the proxy's.
        Engines call this before :meth:`admit`.
        """
        return self.admission.client_request(request)

    def release_admission(self, request: Request) -> None:
        """Give back the slot :meth:`admit` reserved, for a request that did not become a
        connection (the upgrade failed, timed out or was cancelled). Idempotent.
        """
        self.admission.release(request)

    def handle_transport(
        self, transport: Transport, request: Request, claims: Any, *, extended: bool = False
    ) -> Awaitable[None]:
        """Serve a connection whose WebSocket handshake happened in an engine: await it.

        ``extended``: the handshake selected ``trioroom.v1``; ``?resume=`` is honoured then.
        """
        self.admission.handshaking += 1
        self.admission.take_slot(request)
        conn = Connection(self._context, str(uuid.uuid4()), request, claims)
        conn.extended = extended
        token = request.query.get("resume") if extended else None
        # Returned, not awaited here: a connection spends its life in there,
        # and every coroutine frame of the chain stays in memory (~0.4 KiB
        # each, per idle connection).
        if token is not None:
            return self._lifecycle.resume_or_serve(conn, transport, token)
        return self._lifecycle.serve(conn, transport)

    # -- the backplane's view of this node (backplane.base.Node) ---------------------

    def deliver_room_from_backplane(self, room: str, message: bytes, exclude: str) -> int:
        """Deliver an encoded message from another node to local members of ``room``."""
        local = self.hub.room(room)
        if local is None:
            return 0
        delivered = self._dispatch.deliver_local(local, binary_frame(message), exclude)
        self.metrics.fanout_deliveries += delivered
        return delivered

    def deliver_direct_from_backplane(self, conn_id: str, message: bytes) -> bool:
        """Deliver an encoded message from another node to a local connection."""
        target = self.hub.member(conn_id)
        if target is None:
            self.metrics.frames_dropped["unknown_dst"] += 1
            return False
        return self._dispatch.deliver_one(target, binary_frame(message))

    def local_rooms_of(self) -> dict[str, list[str]]:
        """Local membership: room name to member IDs (for backplane resyncs)."""
        return self.hub.local_rooms_of()

    def has_connection(self, conn_id: str) -> bool:
        """Whether connection ``conn_id`` is open here."""
        return self.hub.member(conn_id) is not None

    def connection_ids(self) -> list[str]:
        """IDs of the local connections."""
        return [conn.id for conn in self.hub.members()]

    def tell_backplane_unavailable(self, conn_id: str, room: str, event: str, message: str) -> None:
        """Tell connection ``conn_id`` (if here and extended) its frame missed other nodes."""
        conn = self.hub.member(conn_id)
        if conn is not None:
            code = ErrorCode.BACKPLANE_UNAVAILABLE
            self._dispatch.perform(self.hub.error(conn, room, code, message, event=event))

    # -- public API for applications -------------------------------------------

    def connection(self, conn_id: str) -> Connection | None:
        """The local connection with this ID, or ``None``."""
        return self.hub.member(conn_id)

    @property
    def connections(self) -> list[Connection]:
        """Local connections, oldest first."""
        return list(self.hub.members())

    async def rooms(self) -> list[str]:
        """Names of the rooms that have members (on any node)."""
        names = self.hub.room_names()
        if self.backplane.distributed:
            seen = set(names)
            names += [n for n in await self.backplane.remote_rooms() if n not in seen]
        return names

    async def members(self, room: str) -> list[str]:
        """IDs of the members of ``room`` (on any node), in join order locally."""
        local = self.hub.room(room)
        ids = list(local.members) if local is not None else []
        if self.backplane.distributed:
            ids += await self.backplane.remote_members(room)
        return ids

    async def send_to(
        self,
        conn_id: str,
        event: str,
        payload: bytes | str = b"",
        *,
        room: str = ROOT,
        src: str = "",
    ) -> bool:
        """Send an event to one connection by ID, on any node.

        Returns ``False`` if it is unknown or its queue is full.
        """
        await trio.lowlevel.checkpoint()
        return self._dispatch.direct(
            self.hub.send_to(conn_id, event, _as_bytes(payload), room=room, src=src)
        )

    async def emit(
        self, room: str, event: str, payload: bytes | str = b"", *, src: str = ""
    ) -> int:
        """Send an event to every member of ``room``; returns local deliveries."""
        return await self.broadcast(room, event, payload, exclude=None, src=src)

    async def broadcast(
        self,
        room: str,
        event: str,
        payload: bytes | str = b"",
        *,
        exclude: str | Connection | None = None,
        src: str = "",
    ) -> int:
        """Send an event to every member of ``room`` except ``exclude``.

        The message is encoded and framed once for all recipients. Returns
        the number of local deliveries.
        """
        await trio.lowlevel.checkpoint()
        if isinstance(exclude, Connection):
            exclude = exclude.id
        effect = self.hub.broadcast(room, event, _as_bytes(payload), exclude=exclude or "", src=src)
        return self._dispatch.fanout(effect)

    async def kick(
        self, conn_id: str, code: int = CloseCode.KICKED, reason: str = "kicked"
    ) -> bool:
        """Close a local connection with ``code`` and ``reason``.

        Returns ``False`` if no such connection is here. Raises ``ValueError``
        for a code that may not be sent.
        """
        check_close(code, reason)
        conn = self.hub.member(conn_id)
        if conn is None:
            await trio.lowlevel.checkpoint()
            return False
        conn.abort(code, reason, "kicked", graceful=True)
        await conn.closed.wait()
        return True

    async def close_room(self, name: str) -> int:
        """Remove every member from ``room``; each gets ``leave_ack``, others ``member_left``.

        Returns how many members were removed.
        """
        room = self.hub.room(name)
        removed = 0
        if room is None:
            await trio.lowlevel.checkpoint()
            return 0
        for conn_id in list(room.members):
            conn = self.hub.member(conn_id)
            if conn is not None:
                await self._dispatch.leave(conn, name)
                removed += 1
        return removed

    def stats(self) -> dict[str, float]:
        """Live gauges: connections, rooms, outbound queue fill, budgeted bytes, backplane."""
        conns = list(self.hub.members())
        return {
            "connections": len(conns),
            "rooms": self.hub.room_count(),
            "queued_frames": sum(c.queued_frames for c in conns),
            "queued_bytes": sum(c.queued_bytes for c in conns),
            "backplane_up": 1 if self.backplane.up else 0,
            "buffered_bytes": self._budget.used,
        }

    def asgi_app(self, *, web: bool = True) -> ASGIApp:
        """An ASGI 3 application whose WebSocket path is this server (:mod:`trioroom.asgi`).

        ``web`` also serves ``/healthz`` and ``/metrics`` below its mount point.
        """
        return ASGIApp(self, web=web)


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _is_loopback(address: Any) -> bool:
    """Whether a listener's socket address is a loopback one (a Unix socket is not)."""
    try:
        return isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return False


def _listener_address(listener: trio.abc.Listener[Any]) -> Any:
    inner: Any = listener
    while inner is not None:
        sock = getattr(inner, "socket", None)
        if sock is not None:
            return sock.getsockname()
        inner = getattr(inner, "transport_listener", None)
    return None
