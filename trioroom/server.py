"""The server: listen, upgrade, authenticate, and dispatch to rooms and handlers.

A :class:`Server` holds no global state; run as many as you like, each inside a
nursery of yours::

    server = trioroom.Server()

    @server.on("ping")
    async def ping(conn, msg):
        await conn.send("pong", msg.payload, room=msg.room)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 8080)

The rules for each inbound frame are those of ``docs/protocol.md``: ``join``
and ``leave`` change membership; a frame with ``dst`` is a direct message; an
event with a registered handler runs only that handler; any other event is
broadcast to the room, excluding its sender. The server always sets ``src``
to the real sender.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .backplane import Backplane, LocalBackplane
from .budget import Budget
from .codes import ROOT, CloseCode, ErrorCode
from .connection import (
    Connection,
    OutboundBatch,
    Transport,
    check_close,
    deliver_to_all,
)
from .extension import (
    ACK,
    EXTENSION_PREFIX,
    SUBPROTOCOL,
    ReplayBuffer,
    error_message,
    not_resumed_message,
    reply_message,
    request_ref,
    resumed_message,
    session_message,
)
from .handshake import (
    HANDSHAKES_IN_PROGRESS,
    Reject,
    Request,
    RequestError,
    TrustedProxies,
    client_address,
    host_allowed,
    origin_allowed,
)
from .log import BoundedLog
from .metrics import Metrics, close_code_label
from .protocol import (
    CONTROL_CHARACTERS,
    RESERVED_EVENTS,
    FrameError,
    Message,
    decode_fields,
    encode,
    member_list_payload,
)
from .rooms import Room, RoomRegistry
from .settings import Settings
from .transport import (
    StreamTransport,
    close_socket_now,
    close_stream,
    receive_some,
    send_all,
)
from .wsframe import binary_frame, frame_payload

if TYPE_CHECKING:
    from .asgi import ASGIApp

__all__ = [
    "AuthorizeCallback",
    "AuthorizeJoinCallback",
    "Handler",
    "ProcessRequestCallback",
    "Server",
]

logger = logging.getLogger("trioroom.server")
wire_logger = logging.getLogger("trioroom.wire")

Handler = Callable[[Connection, Message], Awaitable[Any]]
AuthorizeCallback = Callable[[Request], Awaitable[Any]]
AuthorizeJoinCallback = Callable[[Connection, str], Awaitable[bool]]
#: Answers plain HTTP requests (health checks, static files) before the
#: WebSocket upgrade; returns ``None`` to let the upgrade go on.
ProcessRequestCallback = Callable[[Request], Awaitable[Response | None]]
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])

#: Finds a character that may not appear in room and event names.
_find_control = CONTROL_CHARACTERS.search
_PLAIN_HTTP = object()
#: Why a session ended, as told to a client that tries to resume it.
_ENDED_REASONS = {
    "resume_expired": "expired",
    "slow_consumer": "buffer_overflow",
    "memory_budget": "buffer_overflow",
    "resume_gap": "buffer_overflow",
    "peer": "closed",
    "kicked": "kicked",
    "shutdown": "server_shutdown",
}
_HOOKS = ("connect", "disconnect", "join", "leave")


class Server:
    """A room server. See the module docstring for an example.

    Args:
        settings: All tunables; keyword arguments override single fields
            (``Server(root_notices=False)``).
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
        **overrides: Any,
    ) -> None:
        settings = settings or Settings()
        if overrides:
            settings = attrs.evolve(settings, **overrides)
        self.settings = settings
        self.metrics = Metrics()
        self.authorize = authorize
        self.authorize_join = authorize_join
        self.process_request = process_request
        self.backplane = backplane or LocalBackplane()
        self._rooms: RoomRegistry[Connection] = RoomRegistry()
        self._budget = Budget(settings.max_buffered_bytes)
        # Corks direct writes while a reader handles several messages of one read.
        self._batch = OutboundBatch()
        self._connections: dict[str, Connection] = {}
        # Connection slots per client address, taken at admission (before
        # authorize) and held until the connection is gone.
        self._per_address: Counter[str] = Counter()
        # Admitted requests whose slot no Connection holds yet.
        self._reserved: dict[Request, str] = {}
        # Handshakes in progress per client address (see _begin_handshake).
        self._handshakes: Counter[str] = Counter()
        self._admission_log = BoundedLog(logger)
        self._trusted_proxies = TrustedProxies(settings.forwarded_allow_ips or ())
        self._handshaking = 0
        self._handlers: dict[str, Handler] = {}
        self._hooks: dict[str, list[Callable[..., Awaitable[None]]]] = {h: [] for h in _HOOKS}
        self._accept_scopes: set[trio.CancelScope] = set()
        self._serve_scopes: set[trio.CancelScope] = set()
        self._backplane_running = False
        self._sessions: dict[str, Connection] = {}
        self._ended_sessions: OrderedDict[str, str] = OrderedDict()
        self.shutting_down = False
        self._rate_limited_on = bool(settings.rate_limit)
        # Drops a client can cause at will: logged at a bounded rate, by reason.
        self._drop_log = BoundedLog(logging.getLogger("trioroom.connection"))

    # -- registration ------------------------------------------------------

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Register ``async handler(conn, msg)`` for a custom event.

        Only the handler runs for that event: nothing is broadcast unless it
        does so. ``msg.src`` is the sender's real ID. Raises ``ValueError`` for
        reserved or already registered names.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("event name must be a non-empty string")
        if event in RESERVED_EVENTS:
            raise ValueError(f"event {event!r} is reserved by the protocol; pick another name")
        if event in self._handlers:
            raise ValueError(f"a handler for event {event!r} is already registered")

        def register(handler: Handler) -> Handler:
            if event in self._handlers:
                raise ValueError(f"a handler for event {event!r} is already registered")
            self._handlers[event] = handler
            return handler

        return register

    def on_connect(self, hook: H) -> H:
        """Register ``async hook(conn)``, run after the connection joined ``root``."""
        self._hooks["connect"].append(hook)
        return hook

    def on_disconnect(self, hook: H) -> H:
        """Register ``async hook(conn)``; ``conn.close_code``/``disconnect_reason`` say why.

        The hook runs even when the connection was cancelled, and is cancelled
        itself after ``settings.hook_timeout`` seconds.
        """
        self._hooks["disconnect"].append(hook)
        return hook

    def on_join(self, hook: H) -> H:
        """Register ``async hook(conn, room)``, run after each new membership."""
        self._hooks["join"].append(hook)
        return hook

    def on_leave(self, hook: H) -> H:
        """Register ``async hook(conn, room)``, run after each ended membership."""
        self._hooks["leave"].append(hook)
        return hook

    async def _run_hooks(self, name: str, *args: Any, limit: float | None = None) -> None:
        # Callers check ``self._hooks[name]`` first: most servers have no
        # hooks, and a coroutine per join and leave is not free.
        for hook in self._hooks[name]:
            try:
                if limit is None:
                    # Join and leave hooks run in the caller's own scope: no
                    # cancel scope per hook call on that path.
                    await hook(*args)
                    continue
                # Each hook has its own deadline: one that hangs must not
                # starve the hooks registered after it.
                with trio.move_on_after(limit) as scope:
                    await hook(*args)
            except Exception:
                self.metrics.handler_errors += 1
                logger.exception("%s hook failed", name, extra=_context(args))
            else:
                if scope.cancelled_caught:
                    self.metrics.hook_timeouts += 1
                    logger.warning(
                        "%s hook %s.%s overran %gs: cancelled",
                        name,
                        getattr(hook, "__module__", "?"),
                        getattr(hook, "__qualname__", repr(hook)),
                        limit,
                        extra=_context(args),
                    )

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
                await self._ensure_backplane(nursery)
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
                await trio.serve_listeners(handler, list(listeners), handler_nursery=nursery)
        finally:
            self._accept_scopes.discard(scope)
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            # shutdown() cancels the serve scopes once every connection is
            # closed. Not earlier: a connection already gone from
            # _connections may still be leaving its rooms through the
            # backplane, which runs in this nursery.

    async def _ensure_backplane(self, nursery: trio.Nursery) -> None:
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
        self.shutting_down = True
        for scope in list(self._accept_scopes):
            scope.cancel()
        connections = list(self._connections.values())
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

    # -- one connection --------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream, *, loopback_only: bool = False) -> None:
        """Serve one client on an accepted byte stream (TCP, TLS or in-memory).

        ``loopback_only`` says the stream came from listeners bound only to
        loopback addresses: then, unless ``allowed_hosts`` is set, only
        loopback ``Host`` names are accepted (against DNS rebinding).
        :meth:`serve` and :meth:`serve_listeners` pass it; a stream handed
        over directly has no listener to judge by, so only ``allowed_hosts``
        applies to it.

        Never raises: every failure is logged and the stream is closed.
        """
        remote = _remote_address(stream)
        # A trusted proxy carries many clients: each is counted by its
        # forwarded address once the request is read (see _open).
        capped = None if remote in self._trusted_proxies else remote
        if not await self._begin_handshake(capped, stream):
            await close_stream(stream)
            return
        protocol = ServerProtocol(
            max_size=self.settings.max_message_size,
            logger=wire_logger,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            select_subprotocol=_select_extension,
        )
        self._handshaking += 1
        registered = False
        try:
            try:
                conn = await self._open(stream, protocol, remote, loopback_only)
            finally:
                self._end_handshake(capped)
            if conn is None:
                return
            registered = True
            conn.extended = protocol.subprotocol == SUBPROTOCOL
            transport = StreamTransport(
                stream,
                protocol,
                ping_rate=self.settings.ping_rate_limit,
                ping_burst=self.settings.ping_burst,
            )
            await self._start(conn, transport)
        except Exception:
            logger.exception("connection from %s failed", remote)
        finally:
            if not registered:
                self._handshaking -= 1
            # A plain socket closes synchronously: no shielded scope needed.
            if not close_socket_now(stream):
                with trio.CancelScope(shield=True):
                    await close_stream(stream)

    async def _open(
        self,
        stream: trio.abc.Stream,
        protocol: ServerProtocol,
        remote: str | None,
        loopback_only: bool = False,
    ) -> Connection | None:
        """The opening handshake: a Connection once the 101 is sent, else ``None``.

        One deadline, ``handshake_timeout``, covers all of it: reading the
        request, deciding (``authorize`` included) and sending the answer.
        """
        request: Request | None = None
        forwarded_count: str | None = None
        try:
            with trio.move_on_after(self.settings.handshake_timeout) as deadline:
                ws_request = await _read_request(stream, protocol)
                if ws_request is None:
                    return None
                request = self.client_request(Request(ws_request.path, ws_request.headers, remote))
                capped = False
                if remote in self._trusted_proxies:
                    capped = not self._count_handshake(request.remote_address)
                    if not capped:
                        forwarded_count = request.remote_address
                if capped:
                    response = protocol.reject(429, HANDSHAKES_IN_PROGRESS + "\n")
                    claims = None
                else:
                    response, claims = await self._negotiate(
                        request, ws_request, protocol, loopback_only
                    )
                accepted = response.status_code == 101
                if not accepted and claims is not _PLAIN_HTTP:
                    self.metrics.handshakes_rejected[response.status_code] += 1
                protocol.send_response(response)
                await send_all(stream, b"".join(protocol.data_to_send()))
                if not accepted:
                    return None
                return self._new_connection(request, claims)
        finally:
            # Refused, timed out, cancelled or failed after admission: the
            # slot admit() reserved goes back (a no-op once a Connection has it).
            if request is not None:
                self.release_admission(request)
            self._end_handshake(forwarded_count)
        if deadline.cancelled_caught:
            self.metrics.handshakes_rejected[408] += 1
            logger.debug("handshake from %s timed out", remote)
        return None

    async def _negotiate(
        self,
        request: Request,
        ws_request: WsRequest,
        protocol: ServerProtocol,
        loopback_only: bool = False,
    ) -> tuple[Response, Any]:
        try:
            # Before process_request: /metrics and /healthz need it too.
            self._screen(request, loopback_only)
        except Reject as exc:
            return protocol.reject(exc.status, exc.body + "\n"), None
        if self.process_request is not None:
            response = await self.process_request(request)
            if response is not None:
                # A plain HTTP answer (page, health check): not a refused handshake.
                return response, _PLAIN_HTTP
        if request.path != self.settings.path:
            return protocol.reject(404, "Not Found\n"), None
        try:
            claims = await self.admit(request)
        except Reject as exc:
            return protocol.reject(exc.status, exc.body + "\n"), None
        return protocol.accept(ws_request), claims

    async def admit(self, request: Request) -> Any:
        """Decide whether a WebSocket request may connect; return its claims.

        Applies, in order: the origin policy (403), shutdown and connection
        limits (503, 429) and ``authorize`` (401 unless it chose another
        status). Raises :class:`~trioroom.Reject` to refuse. Every engine
        (native, trio-websocket adapter) admits through here.

        The request's slot in ``max_connections_per_address`` is reserved
        before ``authorize`` runs and given back if admission fails. Once this
        returns, pass the request to :meth:`handle_transport` (whose
        connection then holds the slot) or call :meth:`release_admission`.
        """
        settings = self.settings
        if not origin_allowed(
            request.headers, settings.allowed_origins, settings.allow_all_origins
        ):
            logger.info("origin %r refused", request.headers.get("Origin"))
            raise Reject(403, "Origin not allowed")
        if self.shutting_down:
            raise Reject(503, "Server shutting down")
        if len(self._connections) + self._handshaking > settings.max_connections:
            raise Reject(503, "Too many connections")
        remote = request.remote_address
        if remote is not None:
            if self._per_address[remote] >= settings.max_connections_per_address:
                raise Reject(429, "Too many connections from your address")
            # Reserved now, not after authorize and the 101: requests racing
            # through a slow authorize would each see the old count.
            self._per_address[remote] += 1
            self._reserved[request] = remote
        if self.authorize is None:
            return None
        try:
            claims = await self.authorize(request)
        except BaseException:
            self.release_admission(request)
            raise
        if claims is None or claims is False:
            self.release_admission(request)
            raise Reject(401, "Unauthorized")
        return claims

    def _screen(self, request: Request, loopback_only: bool) -> None:
        """Refuse (400) duplicate ``Host`` or ``Origin`` headers and a ``Host`` not allowed.

        Runs before anything else reads the request. A duplicate header is
        ambiguous (which one did the origin policy see?), and reading one
        with ``headers[name]`` raises.
        """
        headers = request.headers
        for name in ("Host", "Origin"):
            if len(headers.get_all(name)) > 1:
                self._admission_log.log(
                    logging.INFO,
                    "duplicate",
                    "refused a request from %s: duplicate %s header",
                    request.remote_address,
                    name,
                )
                raise Reject(400, f"Duplicate {name} header")
        host = headers.get("Host")
        if not host_allowed(host, self.settings.allowed_hosts, loopback_only):
            self._admission_log.log(
                logging.INFO,
                "host",
                "refused a request from %s: Host %r not allowed",
                request.remote_address,
                host,
            )
            raise Reject(400, "Host not allowed")

    def client_request(self, request: Request) -> Request:
        """``request`` with the client's address, if its peer is a trusted proxy.

        ``remote_address`` becomes the address the proxy forwarded
        (``settings.forwarded_allow_ips``); ``peer_address`` keeps the proxy's.
        Engines call this before :meth:`admit`.
        """
        peer = request.peer_address
        if peer not in self._trusted_proxies:
            return request
        client = client_address(request.headers, peer, self._trusted_proxies)
        if client == request.remote_address:
            return request
        return attrs.evolve(request, remote_address=client, peer_address=peer)

    def release_admission(self, request: Request) -> None:
        """Give back the connection slot :meth:`admit` reserved for ``request``.

        An engine calls this when an admitted request does not become a
        connection (the upgrade failed, timed out or was cancelled); once
        :meth:`handle_transport` has the request, the connection holds the
        slot until it closes. Calling it again, or for a request that holds no
        slot, does nothing.
        """
        remote = self._reserved.pop(request, None)
        if remote is not None:
            self._release_address(remote)

    def _new_connection(self, request: Request, claims: Any) -> Connection:
        """A Connection that takes over the slot reserved for its request."""
        if request not in self._reserved and request.remote_address is not None:
            # Admitted elsewhere, not through admit(): take the slot now.
            self._per_address[request.remote_address] += 1
        self._reserved.pop(request, None)
        return Connection(self, str(uuid.uuid4()), request, claims)

    def _count_handshake(self, address: str | None) -> bool:
        """Count a handshake in progress from ``address``; ``False`` over the cap.

        Idle sockets from one address would otherwise hold the server's
        handshake capacity (each counts against ``max_connections``) until
        ``handshake_timeout``, locking everyone else out.
        """
        if address is None:
            return True
        limit = self.settings.max_handshakes_per_address
        if self._handshakes[address] >= limit:
            self._admission_log.log(
                logging.WARNING,
                "handshakes",
                "refused a handshake from %s: %d already in progress from that address",
                address,
                limit,
            )
            return False
        self._handshakes[address] += 1
        return True

    async def _begin_handshake(self, address: str | None, stream: trio.abc.Stream) -> bool:
        """:meth:`_count_handshake` at accept; over the cap, answer 429 unread."""
        if self._count_handshake(address):
            return True
        self.metrics.handshakes_rejected[429] += 1
        response = ServerProtocol(logger=wire_logger).reject(429, HANDSHAKES_IN_PROGRESS + "\n")
        with trio.move_on_after(1):
            try:
                await stream.send_all(response.serialize())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        return False

    def _end_handshake(self, address: str | None) -> None:
        if address is not None:
            self._handshakes[address] -= 1
            if self._handshakes[address] <= 0:
                del self._handshakes[address]

    def _start(self, conn: Connection, transport: Transport) -> Awaitable[None]:
        """Serve a new connection, or resume the session its request names.

        Returns the coroutine to await instead of awaiting it: a connection
        spends its life in there, and every frame of the chain stays in
        memory as long as it does.
        """
        token = conn.request.query.get("resume") if conn.extended else None
        if token is not None:
            return self._resume_or_serve(conn, transport, token)
        return self._serve_connection(conn, transport)

    async def _resume_or_serve(self, conn: Connection, transport: Transport, token: str) -> None:
        reason = await self._try_resume(conn, transport, token)
        if reason is None:
            return
        conn.log.info("session not resumed: %s", reason)
        conn._preamble.append(binary_frame(not_resumed_message(reason)))
        await self._serve_connection(conn, transport)

    async def _serve_connection(
        self, conn: Connection, transport: Transport, *, resumed: bool = False
    ) -> None:
        """Join ``root``, run the connection's nursery, and always clean up.

        An extended session whose socket drops is suspended instead, for up to
        ``resume_window`` seconds; if another socket resumes it, that socket's
        task takes the session over and this one returns without cleanup.
        """
        owner = True
        transport_closed = False
        try:
            if not resumed:
                if conn.extended and self.settings.resume_window > 0:
                    self._open_session(conn)
                # The root join_ack is queued (or written) before the connection
                # can be found by ID, so it is always the first frame the client
                # receives.
                conn._start_direct(transport)
                await self._join(conn, ROOT, check=False)
                self._connections[conn.id] = conn
                self._handshaking -= 1
                self.metrics.connections_opened += 1
                conn._debug("connected from %s", conn.remote_address)
                if self._hooks["connect"]:
                    await self._run_hooks("connect", conn)
            while True:
                transport_closed = False
                await conn._serve(transport)
                if not self._may_suspend(conn):
                    break
                with trio.CancelScope(shield=True):
                    await conn._close_transport(transport, keep_queue=True)
                transport_closed = True
                self.metrics.disconnects["suspended"] += 1
                conn.log.info("socket lost (%s): session suspended", conn.disconnect_reason)
                conn._suspend()
                with trio.move_on_after(self.settings.resume_window):
                    if await conn._wait_for_resume():
                        owner = False
                        return
                if conn.close_code is None:
                    conn.close_code = CloseCode.ABNORMAL_CLOSURE
                    conn.disconnect_reason = "resume_expired"
                break
        finally:
            if owner:
                # (A session taken over is another socket's now, direct path
                # included.)
                conn._stop_direct()
                conn._may_resume = False
                with trio.CancelScope(shield=True):
                    self._close_session(conn)
                    await self._disconnect(conn)
                    self._record_close(conn)
                    if not transport_closed:
                        await conn._close_transport(transport)
                    conn._set_closed()
                    conn._release()
                    if self._hooks["disconnect"]:
                        # Shielded so that hooks run even when cancelled, and
                        # therefore bounded: shutdown must end.
                        await self._run_hooks("disconnect", conn, limit=self.settings.hook_timeout)

    # -- sessions of the trioroom.v1 extension ------------------------------------

    def _open_session(self, conn: Connection) -> None:
        settings = self.settings
        conn.resume_token = secrets.token_urlsafe(24)
        conn.replay = ReplayBuffer(
            settings.resume_buffer_frames, settings.resume_buffer_bytes, budget=self._budget
        )
        conn._may_resume = True
        conn._session_changed = trio.Event()
        conn._suspended = trio.Event()
        self._sessions[conn.resume_token] = conn
        conn._preamble.append(
            binary_frame(session_message(conn.resume_token, settings.resume_window, conn.id))
        )

    def _close_session(self, conn: Connection) -> None:
        token = conn.resume_token
        if token is None or self._sessions.get(token) is not conn:
            return
        del self._sessions[token]
        reason = conn.disconnect_reason
        self._ended_sessions[token] = _ENDED_REASONS.get(reason, "closed")
        while len(self._ended_sessions) > 10_000:
            self._ended_sessions.popitem(last=False)

    def _may_suspend(self, conn: Connection) -> bool:
        if not conn._may_resume or self.shutting_down:
            return False
        why = conn.disconnect_reason
        if why == "peer":
            # Any close frame from the client is deliberate and ends the
            # session; only a socket that vanished (1006) is suspended.
            return conn.close_code == CloseCode.ABNORMAL_CLOSURE
        return why in ("heartbeat_timeout", "write_timeout", "replaced")

    async def _try_resume(self, fresh: Connection, transport: Transport, token: str) -> str | None:
        """Resume the session of ``token`` on a new socket; return why not, or ``None``."""
        session = self._sessions.get(token)
        if session is None:
            return self._ended_sessions.get(token, "unknown_token")
        if session.claims != fresh.claims:
            return "identity_mismatch"
        try:
            last = int(fresh.request.query.get("last", "0"))
        except ValueError:
            return "bad_request"
        if not session.suspended:
            # The old socket still looks alive to us: the client knows better.
            session.abort(CloseCode.GOING_AWAY, "replaced by a resumed socket", "replaced")
            with trio.move_on_after(self.settings.close_timeout + 1):
                while not session.suspended and session.resume_token in self._sessions:
                    assert session._suspended is not None
                    await session._suspended.wait()
            if not session.suspended:
                return "expired"
        assert session.replay is not None
        frames = session.replay.since(last)
        if frames is None:
            session.abort(CloseCode.ABNORMAL_CLOSURE, "", "resume_gap")
            return "buffer_overflow"
        session.replay.acknowledge(last)
        # The session carries on with the new request's address.
        self._handshaking -= 1
        self._release_address(session.remote_address)
        session.request = fresh.request
        session.log.info("session resumed after frame %d: replaying %d", last, len(frames))
        self.metrics.disconnects["resumed"] += 1
        session._take_over([binary_frame(resumed_message(session.id, len(frames))), *frames])
        await self._serve_connection(session, transport, resumed=True)
        return None

    async def handle_transport(
        self, transport: Transport, request: Request, claims: Any, *, extended: bool = False
    ) -> None:
        """Serve a connection whose WebSocket handshake happened elsewhere (adapters).

        ``extended`` says the handshake selected the ``trioroom.v1`` subprotocol.
        """
        self._handshaking += 1
        conn = self._new_connection(request, claims)
        conn.extended = extended
        await self._start(conn, transport)

    def _record_close(self, conn: Connection) -> None:
        metrics = self.metrics
        metrics.connections_closed += 1
        metrics.disconnects[conn.disconnect_reason or "cancelled"] += 1
        if conn.close_code is not None:
            # Codes from the peer are bucketed (a client picks any of 2,000);
            # codes this server sent are the application's own choice.
            code = conn.close_code
            label = close_code_label(code) if conn.disconnect_reason == "peer" else int(code)
            metrics.close_codes[label] += 1
        conn._debug(
            "disconnected: %s (code %s %s)",
            conn.disconnect_reason or "cancelled",
            conn.close_code,
            conn.close_reason,
        )

    async def _disconnect(self, conn: Connection) -> None:
        """Leave every room, telling the remaining members; forget the connection."""
        if self._connections.get(conn.id) is conn:
            del self._connections[conn.id]
        else:
            # Cancelled before registration finished.
            self._handshaking -= 1
        self._release_address(conn.remote_address)
        if self.backplane.distributed or self._hooks["leave"]:
            # Leaving may wait for the backplane or a hook: bounded.
            with trio.move_on_after(self.settings.close_timeout):
                for name in reversed(list(conn._rooms)):  # root last
                    await self._leave(conn, name, ack=False)
        else:
            # Nothing here can wait (room locks are only held across backplane
            # calls): no deadline, whose cancel scope would cost more than this.
            for name in reversed(list(conn._rooms)):
                await self._leave(conn, name, ack=False)
        for name in list(conn._rooms):
            # A room lock is stuck (e.g. a backplane call hanging): remove the
            # membership without it rather than leak it.
            self._force_leave(conn, name)

    def _release_address(self, remote: str | None) -> None:
        if remote is not None:
            self._per_address[remote] -= 1
            if self._per_address[remote] <= 0:
                del self._per_address[remote]

    # -- inbound frames ------------------------------------------------------

    async def _handle_data(self, conn: Connection, data: bytes) -> None:
        """Apply the protocol's rules to one inbound message.

        The hot path of the server: fields stay a tuple, and a
        :class:`Message` is built only for a handler.
        """
        metrics = self.metrics
        metrics.messages_in += 1
        metrics.bytes_in += len(data)
        if self._rate_limited_on and not conn._take_token():
            self._rate_limited(conn, data)
            return
        try:
            room, event, dst, src, payload = decode_fields(data)
        except FrameError as exc:
            self._bad_frame(conn, str(exc))
            return
        ref = request_ref(src) if conn.extended else None
        limit = self.settings.max_field_length
        # A string of at most limit/4 characters fits in limit bytes of UTF-8.
        quarter = limit // 4
        if len(room) > quarter or len(event) > quarter or len(dst) > quarter or len(src) > quarter:
            try:
                _check_fields(room, event, dst, src, limit)
            except FrameError as exc:
                self._bad_frame(conn, str(exc), ref=ref)
                return
        # isprintable() is False for every control character (and for a few
        # harmless ones): the exact check runs only for those names.
        if not (room.isprintable() and event.isprintable()) and (
            _find_control(room) or _find_control(event)
        ):
            self._bad_name(conn, room, event, ref)
            return
        # Joins, leaves and handlers may yield to other tasks: a batch of
        # corked frames (see OutboundBatch) is written before them.
        if event == "join":
            self._batch.flush()
            if await self._join(conn, room, ref=ref) and ref is not None:
                self._send_reply(conn, room, ref, None)
        elif event == "leave":
            self._batch.flush()
            await self._leave(conn, room)
            if ref is not None:
                self._send_reply(conn, room, ref, None)
        elif event == ACK:
            # Consumed even without a session: it is never broadcast.
            if conn.replay is not None:
                try:
                    conn.replay.acknowledge(int(payload))
                except ValueError:
                    self._bad_frame(conn, "acknowledgement is not a number")
        elif event in RESERVED_EVENTS or event.startswith(EXTENSION_PREFIX):
            # trioroom.* names are the extension's: a client forging one could
            # confuse other clients' frame counting.
            self._bad_frame(conn, f"clients may not send reserved event {event!r}", ref=ref)
        elif dst:
            if room != ROOT and room not in conn._rooms:
                # The recipient's client files a message under its room field:
                # without this, anyone could write into a room they may not join.
                self._refuse_direct(conn, room, event, ref)
                return
            frame = binary_frame(encode(room, event, dst, conn.id, payload))
            if self._send_direct(dst, frame, room, conn):
                if ref is not None:
                    self._send_reply(conn, room, ref, None)
            elif conn.extended:
                self._send_error(
                    conn,
                    room,
                    ErrorCode.UNKNOWN_DESTINATION,
                    f"no connection {dst}",
                    event=event,
                    ref=ref,
                )
        elif event in self._handlers:
            self._batch.flush()
            await self._call_handler(conn, Message(room, event, dst, conn.id, payload), ref)
        else:
            members = self._rooms.get(room)
            if members is None or conn.id not in members.members:
                metrics.frames_dropped["not_a_member"] += 1
                conn._debug("broadcast to %r dropped: not a member", room)
                if conn.extended:
                    self._send_error(
                        conn,
                        room,
                        ErrorCode.NOT_A_MEMBER,
                        f"not a member of room {room!r}",
                        event=event,
                        ref=ref,
                    )
                return
            message = encode(room, event, "", conn.id, payload)
            self._fanout(room, message, binary_frame(message), conn.id)
            if ref is not None:
                self._send_reply(conn, room, ref, None)

    def _rate_limited(self, conn: Connection, data: bytes) -> None:
        self.metrics.frames_dropped["rate_limited"] += 1
        conn.frames_dropped += 1
        close = self.settings.rate_limit_policy == "close"
        if conn.close_code is None:
            self._drop_log.log(
                logging.WARNING if close else logging.INFO,
                "rate_limited",
                "over the rate limit (%g messages/s, burst %d): %s",
                self.settings.rate_limit,
                self.settings.rate_burst,
                "closing with 1008" if close else "message dropped",
                extra={"conn_id": conn.id},
            )
        if conn.extended:
            # Decoded only to answer the request it may be.
            try:
                dropped: Message | None = Message.decode(data)
            except FrameError:
                dropped = None
            self._send_error(
                conn,
                dropped.room if dropped else ROOT,
                ErrorCode.RATE_LIMITED,
                "rate limit exceeded",
                event=dropped.event if dropped else "",
                ref=request_ref(dropped.src) if dropped else None,
            )
        if close:
            # Graceful: the error event and what was queued before it go out
            # ahead of the close frame.
            conn.abort(CloseCode.POLICY_VIOLATION, "rate limit", "rate_limited", graceful=True)

    def _bad_name(self, conn: Connection, room: str, event: str, ref: str | None) -> None:
        if event == "join":
            self._refuse_join(conn, room, "room name has control characters", ref)
        else:
            self._bad_frame(conn, "room or event name has control characters", ref=ref)

    def _refuse_direct(self, conn: Connection, room: str, event: str, ref: str | None) -> None:
        self.metrics.frames_dropped["not_a_member"] += 1
        conn.frames_dropped += 1
        self._drop_log.log(
            logging.INFO,
            "direct_not_a_member",
            "direct message dropped: sender is not a member of its room",
            extra={"conn_id": conn.id, "room": room, "event": event},
        )
        self._send_error(
            conn,
            room,
            ErrorCode.NOT_A_MEMBER,
            f"a direct message must use room {ROOT!r} or a room you are in",
            event=event,
            ref=ref,
        )

    def _send_reply(self, conn: Connection, room: str, ref: str, value: Any) -> None:
        conn._deliver(binary_frame(reply_message(room, ref, value)))

    def _send_error(
        self,
        conn: Connection,
        room: str,
        code: str,
        message: str,
        *,
        event: str = "",
        ref: str | None = None,
    ) -> None:
        """Tell an extended client what went wrong (plain clients get nothing)."""
        if conn.extended:
            conn._deliver(binary_frame(error_message(room, code, message, event=event, ref=ref)))

    def _bad_frame(self, conn: Connection, reason: str, *, ref: str | None = None) -> None:
        conn.bad_frames += 1
        self.metrics.frames_dropped["malformed"] += 1
        conn.log.info("dropped frame: %s", reason)
        self._send_error(conn, ROOT, ErrorCode.MALFORMED, reason, ref=ref)
        if conn.bad_frames > self.settings.max_bad_frames:
            conn.log.warning("closing after %d malformed frames", conn.bad_frames)
            conn.abort(CloseCode.POLICY_VIOLATION, "too many malformed frames", "bad_frames")

    async def _call_handler(self, conn: Connection, msg: Message, ref: str | None = None) -> Any:
        handler = self._handlers[msg.event]
        metrics = self.metrics
        metrics.handler_calls += 1
        started = time.perf_counter()
        try:
            if ref is None:
                return await handler(conn, msg)
            with trio.move_on_after(self.settings.request_timeout) as scope:
                value = await handler(conn, msg)
            if scope.cancelled_caught:
                self._send_error(
                    conn,
                    msg.room,
                    ErrorCode.TIMEOUT,
                    f"handler took over {self.settings.request_timeout}s",
                    event=msg.event,
                    ref=ref,
                )
                return None
            self._send_reply(conn, msg.room, ref, value)
            return value
        except trio.Cancelled:
            # The socket closed under the handler (or was replaced by a
            # resume): the request is still answered, on the session's queue.
            if ref is not None:
                self._send_error(
                    conn,
                    msg.room,
                    ErrorCode.CANCELLED,
                    "the handler was cancelled when the connection closed",
                    event=msg.event,
                    ref=ref,
                )
            raise
        except Exception as exc:
            metrics.handler_errors += 1
            conn.log.exception(
                "handler for event %r raised",
                msg.event,
                extra={"event": msg.event, "room": msg.room},
            )
            # Only RequestError texts are meant for clients; others may leak internals.
            text = str(exc) if isinstance(exc, RequestError) else "the handler failed"
            code = exc.code if isinstance(exc, RequestError) else ErrorCode.HANDLER_ERROR
            self._send_error(conn, msg.room, code, text, event=msg.event, ref=ref)
            return None
        finally:
            metrics.handler_seconds += time.perf_counter() - started

    # -- membership --------------------------------------------------------------

    async def _join(
        self, conn: Connection, name: str, *, check: bool = True, ref: str | None = None
    ) -> bool:
        settings = self.settings
        if check:
            reason = None
            if not name:
                reason = "empty room name"
            elif name not in conn._rooms and len(conn._rooms) >= settings.max_rooms_per_connection:
                reason = f"already in {len(conn._rooms)} rooms"
            elif self.authorize_join is not None and not await self.authorize_join(conn, name):
                reason = "refused by authorize_join"
            if reason is not None:
                self._refuse_join(conn, name, reason, ref)
                return False
        notify = name != ROOT or settings.root_notices
        async with self._rooms.locked(name, create=True) as room:
            assert room is not None
            members = room.members
            new = conn.id not in members
            if new and len(members) >= settings.max_members_per_room and name != ROOT:
                self._refuse_join(conn, name, "room is full", ref)
                return False
            distributed = self.backplane.distributed
            if new and distributed:
                # Registered (and subscribed) first: the member list below then
                # has every member on other nodes, and a member told of the
                # joiner can already reach it.
                await self.backplane.joined(name, conn.id)
            member_list = await self._member_list(name, room, conn.id, new)
            # No checkpoint from here to the ack, so nothing of this room
            # reaches the joiner before its join_ack.
            if new:
                room.add(conn.id, conn)
                conn._rooms[name] = None
            ack = encode(name, "join_ack", "", conn.id, member_list)
            conn._deliver(binary_frame(ack))
            if new and notify and (len(members) > 1 or distributed):
                notice = encode(name, "new_member", "", "", conn.id.encode())
                self._fanout(name, notice, binary_frame(notice), conn.id, count=False)
        if new:
            conn._debug("joined", extra={"room": name})
            if self._hooks["join"]:
                await self._run_hooks("join", conn, name)
        return True

    async def _member_list(
        self, name: str, room: Room[Connection], joiner: str, new: bool
    ) -> bytes:
        """The member list of a ``join_ack``: the joiner first, then the others.

        At most ``member_list_limit`` IDs (``root_member_list_limit`` for
        ``root``), members on other nodes included. The others' part is
        encoded once per membership change (:meth:`Room.encoded_members`).
        A repeated join gets the joiner alone: the client has the list
        already, kept current by ``new_member`` and ``member_left``, and
        joining again must not be a way to have it sent over and over.
        """
        own = member_list_payload((joiner,))
        if not new:
            return own
        settings = self.settings
        limit = settings.root_member_list_limit if name == ROOT else settings.member_list_limit
        cap = max(limit - 1, 0)
        others = room.encoded_members(cap)
        listed = room.member_list_size
        parts: list[bytes | memoryview] = [own[:-1]]
        if listed:
            parts += (b",", memoryview(others)[1:-1])
        if self.backplane.distributed and listed < cap:
            remote = await self.backplane.remote_members(name, limit=cap - listed)
            if remote:
                parts += (b",", member_list_payload(remote[: cap - listed])[1:-1])
        parts.append(b"]")
        return b"".join(parts)

    def _refuse_join(self, conn: Connection, name: str, reason: str, ref: str | None) -> None:
        self.metrics.frames_dropped["join_refused"] += 1
        # Bounded: a client can have joins refused as fast as it sends them.
        self._drop_log.log(
            logging.INFO,
            "join_refused",
            "join refused: %s",
            reason,
            extra={"conn_id": conn.id, "room": name},
        )
        self._send_error(conn, name, ErrorCode.JOIN_REFUSED, reason, event="join", ref=ref)

    async def _leave(self, conn: Connection, name: str, *, ack: bool = True) -> None:
        left = False
        async with self._rooms.locked(name, create=False) as room:
            if room is not None and conn.id in room.members:
                if self.backplane.distributed:
                    # Unregistered before the notice goes out, so a member told
                    # of the leave no longer finds it in member lists.
                    await self.backplane.left(name, conn.id)
                self._remove_member(conn, name, room)
                left = True
        conn._rooms.pop(name, None)
        if ack:
            conn._deliver(binary_frame(encode(name, "leave_ack", "", conn.id, conn.id.encode())))
        if left:
            conn._debug("left", extra={"room": name})
            if self._hooks["leave"]:
                await self._run_hooks("leave", conn, name)

    def _remove_member(self, conn: Connection, name: str, room: Room[Connection]) -> None:
        room.remove(conn.id)
        conn._rooms.pop(name, None)
        members = room.members
        if (members or self.backplane.distributed) and (name != ROOT or self.settings.root_notices):
            notice = encode(name, "member_left", "", "", conn.id.encode())
            self._fanout(name, notice, binary_frame(notice), "", count=False)

    def _force_leave(self, conn: Connection, name: str) -> None:
        room = self._rooms.get(name)
        if room is not None and conn.id in room.members:
            self._remove_member(conn, name, room)
            self._rooms._remove_if_empty(room)
        conn._rooms.pop(name, None)

    # -- delivery ------------------------------------------------------------------

    def _fanout(
        self, name: str, message: bytes, frame: bytes, exclude: str, *, count: bool = True
    ) -> int:
        """Queue one frame to every member of ``name`` but ``exclude``, on every node."""
        delivered = self._fanout_local(name, frame, exclude)
        if self.backplane.distributed:
            self.backplane.publish_room(name, message, exclude)
        if count:
            self.metrics.broadcasts += 1
            self.metrics.fanout_deliveries += delivered
        return delivered

    def _fanout_local(self, name: str, frame: bytes, exclude: str) -> int:
        room = self._rooms.get(name)
        if room is None:
            return 0
        delivered = deliver_to_all(room.members.items(), frame, exclude)
        metrics = self.metrics
        metrics.messages_out += delivered
        metrics.bytes_out += delivered * len(frame)
        return delivered

    # -- entry points for backplanes ---------------------------------------------

    def deliver_room_from_backplane(self, room: str, message: bytes, exclude: str) -> int:
        """Deliver an encoded message from another node to local members of ``room``."""
        delivered = self._fanout_local(room, binary_frame(message), exclude)
        self.metrics.fanout_deliveries += delivered
        return delivered

    def deliver_direct_from_backplane(self, conn_id: str, message: bytes) -> bool:
        """Deliver an encoded message from another node to a local connection."""
        target = self._connections.get(conn_id)
        if target is None:
            self.metrics.frames_dropped["unknown_dst"] += 1
            return False
        frame = binary_frame(message)
        if target._deliver(frame):
            self.metrics.messages_out += 1
            self.metrics.bytes_out += len(frame)
            return True
        return False

    def local_rooms_of(self) -> dict[str, list[str]]:
        """Local membership: room name to member IDs (for backplane resyncs)."""
        return {room.name: list(room.members) for room in self._rooms}

    def _send_direct(
        self, conn_id: str, frame: bytes, room: str, sender: Connection | None
    ) -> bool:
        target = self._connections.get(conn_id)
        if target is not None:
            if target._deliver(frame):
                self.metrics.messages_out += 1
                self.metrics.bytes_out += len(frame)
                return True
            return False
        if self.backplane.distributed:
            return self.backplane.publish_direct(conn_id, frame_payload(frame))
        self.metrics.frames_dropped["unknown_dst"] += 1
        if sender is not None:
            sender._debug("direct message to unknown %s dropped", conn_id, extra={"room": room})
        return False

    # -- public API for applications -------------------------------------------

    def connection(self, conn_id: str) -> Connection | None:
        """The local connection with this ID, or ``None``."""
        return self._connections.get(conn_id)

    @property
    def connections(self) -> list[Connection]:
        """Local connections, oldest first."""
        return list(self._connections.values())

    async def rooms(self) -> list[str]:
        """Names of the rooms that have members (on any node)."""
        names = self._rooms.names()
        if self.backplane.distributed:
            seen = set(names)
            names += [n for n in await self.backplane.remote_rooms() if n not in seen]
        return names

    async def members(self, room: str) -> list[str]:
        """IDs of the members of ``room`` (on any node), in join order locally."""
        local = self._rooms.get(room)
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
        frame = binary_frame(encode(room, event, conn_id, src, _as_bytes(payload)))
        return self._send_direct(conn_id, frame, room, None)

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
        message = encode(room, event, "", src, _as_bytes(payload))
        return self._fanout(room, message, binary_frame(message), exclude or "")

    async def kick(
        self, conn_id: str, code: int = CloseCode.KICKED, reason: str = "kicked"
    ) -> bool:
        """Close a local connection with ``code`` and ``reason``.

        Returns ``False`` if no such connection is here. Raises ``ValueError``
        for a code that may not be sent.
        """
        check_close(code, reason)
        conn = self._connections.get(conn_id)
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
        room = self._rooms.get(name)
        removed = 0
        if room is None:
            await trio.lowlevel.checkpoint()
            return 0
        for conn_id in list(room.members):
            conn = self._connections.get(conn_id)
            if conn is not None:
                await self._leave(conn, name)
                removed += 1
        return removed

    def stats(self) -> dict[str, float]:
        """Live gauges: connections, rooms, outbound queue fill, budgeted bytes, backplane."""
        conns = self._connections.values()
        return {
            "connections": len(self._connections),
            "rooms": len(self._rooms),
            "queued_frames": sum(c.queued_frames for c in conns),
            "queued_bytes": sum(c.queued_bytes for c in conns),
            "backplane_up": 1 if self.backplane.up else 0,
            "buffered_bytes": self._budget.used,
        }

    async def handle_trio_websocket(self, request: Any) -> None:
        """Serve a ``trio_websocket.WebSocketRequest`` (from ``serve_websocket``).

        Admits it like the native engine (:meth:`admit`; a
        :class:`~trioroom.Reject` becomes ``request.reject(status)``), accepts
        it and serves it until it closes. Never raises for a failing
        connection. See :mod:`trioroom.adapter`.
        """
        from .adapter import serve_trio_websocket

        await serve_trio_websocket(self, request)

    def asgi_app(self, *, web: bool = True) -> ASGIApp:
        """An ASGI 3 application whose WebSocket path is this server (see :mod:`trioroom.asgi`).

        ``web`` also serves ``/healthz`` and ``/metrics`` below its mount point.
        """
        from .asgi import ASGIApp

        return ASGIApp(self, web=web)


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _check_fields(room: str, event: str, dst: str, src: str, limit: int) -> None:
    for name, value in (("room", room), ("event", event), ("dst", dst), ("src", src)):
        if len(value) > limit // 4 and len(value.encode()) > limit:
            raise FrameError(f"field {name!r} is longer than {limit} bytes", 0)


def _context(args: tuple[Any, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args and isinstance(args[0], Connection):
        extra["conn_id"] = args[0].id
    if len(args) > 1 and isinstance(args[1], str):
        extra["room"] = args[1]
    return extra


async def _read_request(stream: trio.abc.Stream, protocol: ServerProtocol) -> WsRequest | None:
    """Feed the protocol until it parsed the HTTP request; ``None`` on EOF or garbage."""
    while True:
        try:
            data = await receive_some(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            if isinstance(event, WsRequest):
                return event
        output = protocol.data_to_send()
        if output or not data:
            # The request was invalid (the protocol wrote an error response)
            # or the peer went away.
            reply = b"".join(output)
            if reply:
                with trio.move_on_after(1):
                    await stream.send_all(reply)
            return None


def _remote_address(stream: trio.abc.Stream) -> str | None:
    inner: Any = stream
    while inner is not None:
        sock = getattr(inner, "socket", None)
        if sock is not None:
            try:
                return str(sock.getpeername()[0])
            except OSError:
                return None
        inner = getattr(inner, "transport_stream", None)
    return None


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


def _select_extension(protocol: ServerProtocol, offered: Sequence[Any]) -> Any:
    """Pick ``trioroom.v1`` when offered; never refuse a client for its subprotocols."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None
