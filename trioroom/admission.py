"""Who may connect: the checks every engine runs before a WebSocket upgrade.

:class:`Admission` holds the limits that span connections: connection slots
per client address (reserved before ``authorize`` runs, so that requests
racing through a slow ``authorize`` cannot exceed them), handshakes in
progress per address, and the count of handshakes that will become
connections. The engines (native, trio-websocket, ASGI) call it in the same
order; see :meth:`trioroom.Server.admit`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .exceptions import Reject
from .handshake import Request, TrustedProxies, client_address, host_allowed, origin_allowed
from .log import BoundedLog
from .settings import Settings

__all__ = ["Admission", "AuthorizeCallback", "Handshake"]

logger = logging.getLogger("trioroom.server")

AuthorizeCallback = Callable[[Request], Awaitable[Any]]


class Admission:
    """Admission state and rules of one server.

    Args:
        settings: The server's settings.
        authorize: ``async (request) -> claims``, or ``None`` to admit everyone.
        connections: Returns how many connections are open.
    """

    def __init__(
        self,
        settings: Settings,
        authorize: AuthorizeCallback | None,
        connections: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.authorize = authorize
        self._connections = connections
        #: Set by shutdown: every new request gets 503.
        self.shutting_down = False
        #: Handshakes (and admitted connections not yet registered) that count
        #: against ``max_connections``.
        self.handshaking = 0
        self.trusted_proxies = TrustedProxies(settings.forwarded_allow_ips or ())
        # Connection slots per client address, taken at admission (before
        # authorize) and held until the connection is gone.
        self._per_address: Counter[str] = Counter()
        # Admitted requests whose slot no connection holds yet.
        self._reserved: dict[Request, str] = {}
        # Handshakes in progress per client address (see begin_handshake).
        self._handshakes: Counter[str] = Counter()
        self._log = BoundedLog(logger)

    def slots(self) -> dict[str, int]:
        """Connection slots held (or reserved) per client address."""
        return dict(self._per_address)

    def handshakes(self) -> dict[str, int]:
        """Handshakes in progress per client address."""
        return dict(self._handshakes)

    def screen(self, request: Request, loopback_only: bool) -> None:
        """Refuse (400) duplicate ``Host`` or ``Origin`` headers and a ``Host`` not allowed.

        Runs before anything else reads the request. A duplicate header is
        ambiguous (which one did the origin policy see?), and reading one
        with ``headers[name]`` raises.
        """
        headers = request.headers
        for name in ("Host", "Origin"):
            if len(headers.get_all(name)) > 1:
                self._log.log(
                    logging.INFO,
                    "duplicate",
                    "refused a request from %s: duplicate %s header",
                    request.remote_address,
                    name,
                )
                raise Reject(400, f"Duplicate {name} header")
        host = headers.get("Host")
        if not host_allowed(host, self.settings.allowed_hosts, loopback_only):
            self._log.log(
                logging.INFO,
                "host",
                "refused a request from %s: Host %r not allowed",
                request.remote_address,
                host,
            )
            raise Reject(400, "Host not allowed")

    def client_request(self, request: Request) -> Request:
        """``request`` with the client's address, if its peer is a trusted proxy."""
        peer = request.peer_address
        if peer not in self.trusted_proxies:
            return request
        client = client_address(request.headers, peer, self.trusted_proxies)
        if client == request.remote_address:
            return request
        return attrs.evolve(request, remote_address=client, peer_address=peer)

    async def admit(self, request: Request) -> Any:
        """The origin policy, limits and ``authorize``; the claims, or :class:`Reject`."""
        settings = self.settings
        if not origin_allowed(
            request.headers, settings.allowed_origins, settings.allow_all_origins
        ):
            logger.info("origin %r refused", request.headers.get("Origin"))
            raise Reject(403, "Origin not allowed")
        if self.shutting_down:
            raise Reject(503, "Server shutting down")
        if self._connections() + self.handshaking > settings.max_connections:
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
            self.release(request)
            raise
        if claims is None or claims is False:
            self.release(request)
            raise Reject(401, "Unauthorized")
        return claims

    def release(self, request: Request) -> None:
        """Give back the slot :meth:`admit` reserved for ``request`` (idempotent)."""
        remote = self._reserved.pop(request, None)
        if remote is not None:
            self.release_address(remote)

    def take_slot(self, request: Request) -> None:
        """A connection takes over the slot reserved for its request.

        A request admitted elsewhere, not through :meth:`admit`, takes one now.
        """
        if request not in self._reserved and request.remote_address is not None:
            self._per_address[request.remote_address] += 1
        self._reserved.pop(request, None)

    def release_address(self, remote: str | None) -> None:
        """A connection from ``remote`` is gone: its slot is free."""
        if remote is not None:
            self._per_address[remote] -= 1
            if self._per_address[remote] <= 0:
                del self._per_address[remote]

    def begin_handshake(self, address: str | None) -> bool:
        """Count a handshake in progress from ``address``; ``False`` over the cap.

        Idle sockets from one address would otherwise hold the server's
        handshake capacity (each counts against ``max_connections``) until
        ``handshake_timeout``, locking everyone else out.
        """
        if address is None:
            return True
        limit = self.settings.max_handshakes_per_address
        if self._handshakes[address] >= limit:
            self._log.log(
                logging.WARNING,
                "handshakes",
                "refused a handshake from %s: %d already in progress from that address",
                address,
                limit,
            )
            return False
        self._handshakes[address] += 1
        return True

    def handshake(self, request: Request) -> Handshake:
        """The counters of an upgrade from ``request``, held for a ``with`` block.

        For engines whose server read the request already (trio-websocket,
        ASGI): call after :meth:`begin_handshake` let the request's address in.
        """
        return Handshake(self, request)

    def end_handshake(self, address: str | None) -> None:
        """The handshake counted by :meth:`begin_handshake` is over."""
        if address is not None:
            self._handshakes[address] -= 1
            if self._handshakes[address] <= 0:
                del self._handshakes[address]


class Handshake:
    """One upgrade in progress, from :meth:`begin_handshake` to the connection.

    Inside the ``with`` block it counts against ``max_connections`` (as
    :attr:`Admission.handshaking`) and against its address's handshakes in
    progress. :meth:`handed_over` gives both back once the connection counts
    itself; leaving the block gives back whatever is still held, and the
    request's connection slot if no connection took it.
    """

    __slots__ = ("_address", "_admission", "_counted", "_request")

    def __init__(self, admission: Admission, request: Request) -> None:
        self._admission = admission
        self._request = request
        self._address = request.remote_address
        self._counted = False

    def __enter__(self) -> Handshake:
        self._admission.handshaking += 1
        self._counted = True
        return self

    def handed_over(self) -> None:
        """The connection counts itself from now on (call just before serving it)."""
        if self._counted:
            self._counted = False
            self._admission.handshaking -= 1
            self._admission.end_handshake(self._address)
            self._address = None

    def __exit__(self, *exc_info: object) -> None:
        self.handed_over()
        # A no-op once a connection holds the slot.
        self._admission.release(self._request)
