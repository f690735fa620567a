"""The opening HTTP request, its origin policy and how to refuse it.

Everything here is plain code over websockets' parsed ``Request``: no I/O.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

import attrs
from websockets.datastructures import Headers

__all__ = ["Reject", "Request", "RequestError", "origin_allowed"]


class Reject(Exception):
    """Raise from ``authorize`` (or a join check) to refuse with an HTTP status.

    ``status`` is sent before any WebSocket frame, with ``body`` as a short
    plain-text explanation.
    """

    def __init__(self, status: int = 401, body: str = "Unauthorized") -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


class RequestError(Exception):
    """Raise from a handler to answer an extended client's request with an error.

    ``code`` and the message reach the client in a ``trioroom.error`` event;
    any other exception is reported as ``handler_error`` without its text.
    """

    def __init__(self, message: str, code: str = "handler_error") -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(eq=False)
class Request:
    """The HTTP request that opens a connection, as ``authorize`` sees it."""

    #: The request target, query string included (``/ws?token=abc``).
    target: str
    headers: Headers
    #: The client's IP address, when known.
    remote_address: str | None = None
    path: str = attrs.field(init=False)
    #: Query parameters; each name maps to its first value.
    query: dict[str, str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.target)
        object.__setattr__(self, "path", parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        object.__setattr__(self, "query", query)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent with the request (malformed ``Cookie`` headers are ignored)."""
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.get_all("Cookie"):
            try:
                jar.load(header)
            except CookieError:
                continue
        return {name: morsel.value for name, morsel in jar.items()}


def origin_allowed(headers: Headers, allowed: tuple[str, ...] | None, allow_all: bool) -> bool:
    """Apply the origin policy.

    By default a request without ``Origin`` (not from a browser) and one whose
    Origin names the same host and port as its ``Host`` header are allowed.
    """
    if allow_all:
        return True
    origins = headers.get_all("Origin")
    if not origins:
        return True
    if len(origins) > 1:
        return False
    origin = origins[0]
    if allowed is not None:
        return origin in allowed
    host = headers.get("Host")
    if host is None:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _same_host(parts.netloc, parts.scheme, host)


def _same_host(origin_netloc: str, scheme: str, host: str) -> bool:
    default_port = "443" if scheme == "https" else "80"

    def split(netloc: str) -> tuple[str, str]:
        if netloc.startswith("["):
            name, _, rest = netloc.partition("]")
            return name + "]", rest.lstrip(":") or default_port
        name, _, port = netloc.partition(":")
        return name, port or default_port

    o_name, o_port = split(origin_netloc.lower())
    h_name, h_port = split(host.lower())
    return o_name == h_name and o_port == h_port
