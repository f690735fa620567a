"""Every tunable of a server, with its default, in one frozen attrs class.

``docs/operations.md`` lists each setting with the close code or error it
produces. The command line exposes each one as a flag and as a
``TRIOROOM_*`` environment variable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, TypedDict

import attrs

from .handshake import TrustedProxies

__all__ = ["RateLimitPolicy", "Settings", "SettingsOverrides", "SlowConsumerPolicy"]

SlowConsumerPolicy = Literal["disconnect", "drop_oldest"]
RateLimitPolicy = Literal["close", "drop"]


def _positive(_inst: object, attribute: Any, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"setting {attribute.name} must be positive, got {value!r}")


def _not_negative(_inst: object, attribute: Any, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"setting {attribute.name} must not be negative, got {value!r}")


def _address_list(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """A tuple from a list, or from a comma-separated string (``"10.0.0.1, 10.0.0.2"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    return tuple(part.strip() for part in value if part.strip())


def _proxies(_inst: object, _attribute: Any, value: tuple[str, ...] | None) -> None:
    TrustedProxies(value or ())  # raises ValueError naming a bad entry


@attrs.frozen(kw_only=True)
class Settings:
    """Server settings. All times are in seconds, all sizes in bytes."""

    #: URL path of the WebSocket endpoint.
    path: str = "/ws"

    # Membership
    #: Send ``new_member``/``member_left`` on ``root``. O(N) per connect; turn
    #: off for large servers (the original server always sent them).
    root_notices: bool = True
    #: At most this many IDs in the ``root`` ``join_ack`` member list (the
    #: joiner is always first). Keeps connecting O(1) at 10,000 connections.
    root_member_list_limit: int = attrs.field(default=100, validator=attrs.validators.ge(0))
    #: At most this many IDs in the ``join_ack`` member list of any other room
    #: (the joiner first, then the oldest members). Bounds what one join can
    #: make the server send: a room's full list grows without limit.
    member_list_limit: int = attrs.field(default=1000, validator=attrs.validators.ge(0))

    # Outbound queue and slow consumers
    #: Capacity of each connection's outbound queue, in frames.
    queue_frames: int = attrs.field(default=256, validator=_positive)
    #: Bound on the bytes waiting in one connection's outbound queue.
    queue_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)
    #: Bound on the bytes held for all clients together: every outbound queue,
    #: the frames being written, and every replay buffer. A frame that does not
    #: fit is answered with its recipient's slow-consumer policy.
    max_buffered_bytes: int = attrs.field(default=1024 * 1024 * 1024, validator=_positive)
    #: What happens when a connection's outbound queue is full.
    slow_consumer_policy: SlowConsumerPolicy = attrs.field(
        default="disconnect", validator=attrs.validators.in_(("disconnect", "drop_oldest"))
    )
    #: A write to the socket that takes longer than this closes the connection.
    write_timeout: float = attrs.field(default=10.0, validator=_positive)

    # Heartbeats and deadlines
    #: Interval between WebSocket pings; ``None`` turns heartbeats off.
    ping_interval: float | None = attrs.field(default=30.0, validator=_positive)
    #: A ping not answered within this time closes the connection (1011).
    ping_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Deadline for the opening handshake, from TCP accept to the 101 response.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Time allowed for the closing handshake before the socket is dropped.
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: Graceful shutdown deadline.
    shutdown_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Deadline of each ``on_disconnect`` hook; one that overruns is cancelled
    #: (and logged by name), so a hung hook cannot hold a shutdown forever.
    hook_timeout: float = attrs.field(default=5.0, validator=_positive)

    # Limits on what clients send
    #: Largest inbound message; larger ones close the connection with 1009.
    max_message_size: int = attrs.field(default=65536, validator=_positive)
    #: Largest room, event, dst or src field in bytes.
    max_field_length: int = attrs.field(default=256, validator=_positive)
    #: Rooms one connection may be in at once, ``root`` included.
    max_rooms_per_connection: int = attrs.field(default=100, validator=_positive)
    #: Members one room may have on this node (``root`` is bounded by max_connections).
    max_members_per_room: int = attrs.field(default=100_000, validator=_positive)
    #: Connections this server accepts at once.
    max_connections: int = attrs.field(default=100_000, validator=_positive)
    #: Connections at once from one client IP address.
    max_connections_per_address: int = attrs.field(default=1024, validator=_positive)
    #: WebSocket handshakes in progress at once from one client address;
    #: more are answered 429 at once. Keeps idle sockets from one address
    #: from holding the server's handshake capacity until handshake_timeout.
    max_handshakes_per_address: int = attrs.field(default=64, validator=_positive)
    #: Sustained inbound messages per second per connection (token bucket);
    #: ``None`` or 0 (the default) turns rate limiting off, as in the wsrooms
    #: servers: a limit drops or refuses well-formed messages, so only the
    #: operator can choose one.
    rate_limit: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    #: Burst size of that token bucket.
    rate_burst: int = attrs.field(default=200, validator=_positive)
    #: What a message over the rate limit does. ``close``: close with 1008
    #: "rate limit", which every client sees, plain wsrooms ones included.
    #: ``drop``: drop the message, count it, and send extended clients an
    #: error event naming it; plain clients are not told.
    rate_limit_policy: RateLimitPolicy = attrs.field(
        default="close", validator=attrs.validators.in_(("close", "drop"))
    )
    #: Malformed frames tolerated per connection before it is closed (1008).
    max_bad_frames: int = attrs.field(default=10, validator=attrs.validators.ge(0))
    #: Sustained WebSocket pings per second one client may send (token
    #: bucket); each costs a pong. A client over it is closed with 1008 "ping
    #: flood". ``None`` or 0 turns the limit off. Browsers and wsrooms clients
    #: send no pings, other libraries one every 20 s or so.
    ping_rate_limit: float | None = attrs.field(default=10.0, validator=_not_negative)
    #: Burst size of that token bucket.
    ping_burst: int = attrs.field(default=100, validator=_positive)

    # The trioroom.v1 extension (resumption, requests, error events)
    #: How long a dropped extended session waits to be resumed; 0 turns
    #: resumption off.
    resume_window: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    #: Frames kept for replay per session (sent but not acknowledged).
    resume_buffer_frames: int = attrs.field(default=1024, validator=_positive)
    #: Bytes kept for replay per session.
    resume_buffer_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)
    #: A request (a frame with ``src="?<ref>"``) whose handler takes longer is
    #: answered with a ``timeout`` error.
    request_timeout: float = attrs.field(default=30.0, validator=_positive)

    # Origin policy
    #: Allowed ``Origin`` values (e.g. ``"https://example.com"``). ``None``:
    #: requests without Origin and same-host Origins only.
    allowed_origins: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )
    #: Accept every Origin (development only).
    allow_all_origins: bool = False
    #: Page origins (e.g. ``"https://app.example.com"``) that may import the
    #: JavaScript client from ``/js/`` across origins: those answers carry
    #: ``Access-Control-Allow-Origin`` for them; ``*`` allows any page.
    #: ``None``: no CORS header (same-origin pages only).
    cors_origins: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    # Health checks
    #: Answer 503 on ``/healthz`` while the backplane (Redis) is down. Off,
    #: it answers 200 with ``"status": "degraded"``: one Redis outage would
    #: otherwise take every node out of the load balancer at once.
    health_requires_backplane: bool = False

    # Proxies and hosts
    #: Proxies whose ``X-Forwarded-For`` and ``Forwarded`` headers are
    #: believed: IP addresses or networks (``10.0.0.0/8``), or ``*`` for any
    #: peer. The client address they carry is then used for limits, logs and
    #: ``Request.remote_address``. ``None``: no proxy is trusted.
    forwarded_allow_ips: tuple[str, ...] | None = attrs.field(
        default=None, converter=_address_list, validator=_proxies
    )
    #: Host names this server answers to (``Host`` header, port ignored):
    #: exact names, ``.example.com`` for a domain and its subdomains, or
    #: ``*``; other hosts get 400. ``None``: a server listening only on
    #: loopback accepts only loopback hosts (against DNS rebinding), others
    #: any host.
    allowed_hosts: tuple[str, ...] | None = attrs.field(default=None, converter=_address_list)


class SettingsOverrides(TypedDict, total=False):
    """The fields of :class:`Settings`, as keyword arguments of :class:`~trioroom.Server`.

    ``Server(root_notices=False)`` is ``Server(Settings(root_notices=False))``;
    this type lets a type checker check the names and types. The defaults are
    those of :class:`Settings` (``tests/test_settings.py`` keeps the two in step).
    """

    path: str
    root_notices: bool
    root_member_list_limit: int
    member_list_limit: int
    queue_frames: int
    queue_bytes: int
    max_buffered_bytes: int
    slow_consumer_policy: SlowConsumerPolicy
    write_timeout: float
    ping_interval: float | None
    ping_timeout: float
    handshake_timeout: float
    close_timeout: float
    shutdown_timeout: float
    hook_timeout: float
    max_message_size: int
    max_field_length: int
    max_rooms_per_connection: int
    max_members_per_room: int
    max_connections: int
    max_connections_per_address: int
    max_handshakes_per_address: int
    rate_limit: float | None
    rate_burst: int
    rate_limit_policy: RateLimitPolicy
    max_bad_frames: int
    ping_rate_limit: float | None
    ping_burst: int
    resume_window: float
    resume_buffer_frames: int
    resume_buffer_bytes: int
    request_timeout: float
    allowed_origins: Iterable[str] | None
    allow_all_origins: bool
    cors_origins: Iterable[str] | None
    health_requires_backplane: bool
    forwarded_allow_ips: str | Iterable[str] | None
    allowed_hosts: str | Iterable[str] | None
