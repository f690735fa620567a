"""The opening HTTP request, its origin policy and how to refuse it.

Everything here is plain code over websockets' parsed ``Request``: no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

import attrs
from websockets.datastructures import Headers

from .exceptions import Reject, RequestError

__all__ = [
    "Reject",
    "Request",
    "RequestError",
    "TrustedProxies",
    "client_address",
    "host_allowed",
    "origin_allowed",
]


#: The body of the 429 for an address over ``max_handshakes_per_address``.
HANDSHAKES_IN_PROGRESS = "Too many handshakes in progress from your address"


@attrs.frozen(eq=False)
class Request:
    """The HTTP request that opens a connection, as ``authorize`` sees it."""

    #: The request target, query string included (``/ws?token=abc``).
    target: str
    headers: Headers
    #: The client's IP address, when known. Behind a trusted proxy
    #: (``forwarded_allow_ips``) it is the address the proxy forwarded.
    remote_address: str | None = None
    #: The address of the socket's peer: the proxy, behind one; else the same
    #: as :attr:`remote_address`.
    peer_address: str | None = attrs.field(
        default=attrs.Factory(lambda self: self.remote_address, takes_self=True)
    )
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


def host_allowed(host: str | None, allowed: tuple[str, ...] | None, loopback_only: bool) -> bool:
    """Apply the ``Host`` check that stops DNS rebinding.

    With ``allowed`` (``allowed_hosts``), the host name (without port) must be
    one of them: an exact name, ``*``, or ``.example.com`` for that domain
    and every subdomain. Without it, a server that listens only on loopback
    accepts only loopback hosts (``localhost``, ``*.localhost``, 127.0.0.0/8,
    ``[::1]``), and any other server every host.
    """
    if allowed is None and not loopback_only:
        return True
    name = _host_name(host) if host is not None else None
    if name is None:
        return False
    if allowed is None:
        return _is_loopback(name)
    for entry in allowed:
        entry = entry.lower()
        if entry == "*" or name == entry:
            return True
        if entry.startswith(".") and (name == entry[1:] or name.endswith(entry)):
            return True
    return False


def _host_name(host: str) -> str | None:
    """The lower-case name of a ``Host`` value, port removed; IPv6 keeps its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host.partition("]")
        name += sep
        port = rest[1:] if rest.startswith(":") else rest
        if not sep or (rest and not (rest.startswith(":") and port.isdigit())):
            return None
    else:
        name, sep, port = host.partition(":")
        if sep and not port.isdigit():
            return None
        # "localhost." names the same host as "localhost".
        name = name.removesuffix(".")
    return name or None


# Asked once per handshake of a loopback-only server, where parsing the
# address is a measurable share of a connect; a client cycling through Host
# values only cycles the cache.
@functools.lru_cache(maxsize=256)
def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


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


class TrustedProxies:
    """The proxies whose forwarded headers are believed (``forwarded_allow_ips``).

    Entries are IP addresses or networks (``10.0.0.0/8``); ``*`` trusts every
    peer. Raises ``ValueError`` naming an entry that is neither.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.all = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self.all = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address, a network (10.0.0.0/8) or *"
                ) from None

    def __bool__(self) -> bool:
        return self.all or bool(self.networks)

    def __contains__(self, address: object) -> bool:
        if self.all:
            return True
        if not self.networks or not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


class _Hop:
    """A forwarded node that is not an address: ``unknown``, obfuscated or malformed."""

    def __init__(self, name: str) -> None:
        self.name = name


_UNKNOWN = _Hop("unknown")
_MALFORMED = _Hop("malformed")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# One ``name=value`` pair of a Forwarded header and the separator after it.
_PAIR = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:([;,])|$)')
_ESCAPE = re.compile(r"\\(.)")


def _node(text: str) -> str | _Hop:
    """The normalised address in ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``."""
    text = text.strip()
    if text.lower() == "unknown" or text.startswith("_"):
        return _UNKNOWN
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return _MALFORMED
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    else:
        host = text
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return _MALFORMED


def _forwarded_hops(values: list[str]) -> list[str | _Hop]:
    """The ``for=`` node of each element of ``Forwarded`` headers (RFC 7239), in order."""
    hops: list[str | _Hop] = []
    for value in values:
        element: str | _Hop = _UNKNOWN
        pos = 0
        while True:
            match = _PAIR.match(value, pos)
            if match is None or match.end() == pos:
                return [_MALFORMED]
            name, quoted, token, sep = match.groups()
            if name.lower() == "for":
                raw = _ESCAPE.sub(r"\1", quoted) if quoted is not None else token
                element = _node(raw)
            pos = match.end()
            if sep != ";":
                hops.append(element)
                element = _UNKNOWN
            if sep is None:
                break
    return hops


def _client_from(hops: list[str | _Hop], peer: str | None, trusted: TrustedProxies) -> str | None:
    # From the right: each hop was added by the proxy to its right, so only
    # hops added by trusted proxies are believed.
    current = peer
    for hop in reversed(hops):
        if hop is _MALFORMED:
            return peer
        if isinstance(hop, _Hop):
            # Nothing to use: the nearest trusted proxy is all we know.
            return current
        if hop not in trusted:
            return hop
        current = hop
    return current


def client_address(headers: Headers, peer: str | None, trusted: TrustedProxies) -> str | None:
    """The client's address: from forwarded headers if ``peer`` is trusted, else ``peer``.

    ``X-Forwarded-For`` and ``Forwarded`` give the hops in order; the
    right-most one that is not a trusted proxy is the client. A malformed
    value gives ``peer``; ``unknown`` and obfuscated (``_name``) ones give the
    nearest trusted proxy. If both headers are present they must agree, or
    ``peer`` is used: a proxy that sets one passes a forged other through.
    """
    if peer not in trusted:
        return peer
    found: list[str | None] = []
    xff = headers.get_all("X-Forwarded-For")
    if xff:
        hops = [_node(part) for part in ",".join(xff).split(",")]
        found.append(_client_from(hops, peer, trusted))
    fwd = headers.get_all("Forwarded")
    if fwd:
        found.append(_client_from(_forwarded_hops(fwd), peer, trusted))
    if not found or any(address != found[0] for address in found):
        return peer
    return found[0]
