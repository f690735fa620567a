"""Plain HTTP beside the WebSocket endpoint: demo page, JS client, health, metrics.

:class:`WebApp` is a ``process_request`` callback for :class:`~trioroom.Server`;
``trioroom serve`` installs one. To add it to a server of your own::

    server = trioroom.Server()
    server.process_request = WebApp(server, demo=False)

Routes (the server answers ``GET`` only; any request carrying
``Upgrade: websocket``, and any request for the WebSocket path, goes on to the
WebSocket handshake untouched):

===================  ========================================================
``/healthz``         ``{"status": "ok", "connections": N, "rooms": M,
                     "backplane": "up"}`` (503 with ``"shutting_down"`` during a
                     graceful shutdown; ``"degraded"``, or 503 with
                     ``"backplane_down"`` if ``health_requires_backplane``,
                     while the backplane is down)
``/metrics``         Prometheus text format (OpenMetrics if the scraper asks)
``/``                the demo chat page
``/demo/<file>``     its assets; ``/demo/config.js`` tells it the WebSocket path
``/js/<file>``       the JavaScript client (``*.js`` and ``*.d.ts``)
===================  ========================================================

Files are looked up by exact name in a list made when the app is created, so
no request path can reach any other file. Every response carries
``Cache-Control: no-cache`` and an ``ETag``.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio
from websockets.datastructures import Headers
from websockets.http11 import Response

from .backplane import Backplane
from .engines.base import ProcessRequestCallback
from .handshake import Request
from .metrics import Metrics, PrometheusCollector
from .settings import Settings


class Observed(Protocol):
    """What the web routes read of a server (:class:`~trioroom.Server` is one)."""

    settings: Settings
    metrics: Metrics

    @property
    def backplane(self) -> Backplane: ...

    @property
    def shutting_down(self) -> bool: ...

    def stats(self) -> dict[str, float]: ...


__all__ = ["CONTENT_TYPES", "WebApp", "client_directory", "demo_directory"]

logger = logging.getLogger("trioroom.web")

PACKAGE_DIR = Path(__file__).resolve().parent

#: Content types by file suffix; files with other suffixes are never served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".d.ts": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

#: The demo page may load only what this server serves, and talk to it.
DEMO_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def client_directory() -> Path | None:
    """The directory holding the JavaScript client's files, if any.

    A wheel ships them as ``trioroom/static/js`` (copied there by
    ``setup.py`` at build time). A source checkout (``pip install -e .``)
    serves ``js/`` next to the package directly, so edits show at once.
    """
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "js" / "trioroom.js").is_file():
        return checkout / "js"
    packaged = PACKAGE_DIR / "static" / "js"
    if (packaged / "trioroom.js").is_file():
        return packaged
    return None


def demo_directory() -> Path:
    """The directory holding the demo page (shipped as package data)."""
    return PACKAGE_DIR / "static" / "demo"


def _suffix(name: str) -> str | None:
    for suffix in sorted(CONTENT_TYPES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _list_files(directory: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Regular files directly inside ``directory`` whose names end in ``suffixes``."""
    if directory is None or not directory.is_dir():
        return {}
    return {
        entry.name: entry
        for entry in sorted(directory.iterdir())
        if entry.is_file() and not entry.name.startswith(".") and entry.name.endswith(suffixes)
    }


def _is_upgrade(headers: Headers) -> bool:
    return any("websocket" in value.lower() for value in headers.get_all("Upgrade"))


class WebApp:
    """The HTTP routes of ``trioroom serve``, as a ``process_request`` callback.

    Args:
        server: The server whose counters and gauges ``/healthz`` and
            ``/metrics`` report, and whose WebSocket path is left alone.
        demo: Serve the demo page at ``/`` and the JS client at ``/js/``.
        metrics: Serve ``/metrics``.
        fallback: Called for requests no route matches (your own
            ``process_request``); without it they go on to the server, which
            answers 404 for any path but its WebSocket path.
    """

    def __init__(
        self,
        server: Observed,
        *,
        demo: bool = True,
        metrics: bool = True,
        fallback: ProcessRequestCallback | None = None,
    ) -> None:
        self.server = server
        self.fallback = fallback
        #: The server's own prometheus-client registry (``None`` without /metrics).
        self.registry: Any = None
        if metrics:
            from prometheus_client import CollectorRegistry

            # One registry per server: nothing global, several servers per process.
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(PrometheusCollector(server.metrics, server.stats))
        self._routes: dict[str, Callable[[Request], Response]] = {"/healthz": self._health}
        if metrics:
            self._routes["/metrics"] = self._metrics
        self._files: dict[str, dict[str, Path]] = {}
        if demo:
            client = client_directory()
            if client is None:
                logger.warning("JavaScript client files not found: /js/ and the demo will 404")
            self._files["/js/"] = _list_files(client, (".js", ".d.ts"))
            self._files["/demo/"] = _list_files(demo_directory(), (".html", ".css", ".js"))
            self._routes["/demo/config.js"] = self._demo_config

    async def __call__(self, request: Request) -> Response | None:
        path = request.path
        if path == self.server.settings.path or _is_upgrade(request.headers):
            return None
        route = self._routes.get(path)
        if route is not None:
            await trio.lowlevel.checkpoint()
            return self._count(route(request))
        if path == "/" and "/demo/" in self._files:
            return self._count(await self._file(request, "/demo/", "index.html"))
        for prefix in self._files:
            if path.startswith(prefix):
                response = await self._file(request, prefix, path[len(prefix) :])
                if prefix == "/js/":
                    self._allow_origin(request, response)
                return self._count(response)
        if self.fallback is not None:
            return await self.fallback(request)
        return None

    def _allow_origin(self, request: Request, response: Response) -> None:
        """CORS for the JavaScript client: a page on an allowed origin may import it."""
        allowed = self.server.settings.cors_origins
        if not allowed:
            return
        if "*" in allowed:
            response.headers["Access-Control-Allow-Origin"] = "*"
            return
        # The answer depends on the Origin: caches must keep one per origin.
        response.headers["Vary"] = "Origin"
        origin = request.headers.get("Origin")
        if origin is not None and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin

    def _count(self, response: Response) -> Response:
        self.server.metrics.http_responses[response.status_code] += 1
        return response

    # -- routes ----------------------------------------------------------------

    def _health(self, request: Request) -> Response:
        server = self.server
        stats = server.stats()
        backplane_up = server.backplane.up
        if server.shutting_down:
            state, status = "shutting_down", 503
        elif not backplane_up and server.settings.health_requires_backplane:
            state, status = "backplane_down", 503
        elif not backplane_up:
            # Local delivery goes on; the operator chose not to fail the check.
            state, status = "degraded", 200
        else:
            state, status = "ok", 200
        body = {
            "status": state,
            "connections": int(stats["connections"]),
            "rooms": int(stats["rooms"]),
            "backplane": "up" if backplane_up else "down",
        }
        return _response(status, json.dumps(body).encode() + b"\n", "application/json")

    def _metrics(self, request: Request) -> Response:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return _response(200, encoder(self.registry), content_type)

    def _demo_config(self, request: Request) -> Response:
        body = f"export const WS_PATH = {json.dumps(self.server.settings.path)};\n"
        return _cached(request, body.encode(), CONTENT_TYPES[".js"])

    async def _file(self, request: Request, prefix: str, name: str) -> Response:
        path = self._files[prefix].get(name)
        suffix = _suffix(name)
        if path is None or suffix is None:
            return _response(404, b"Not Found\n", "text/plain; charset=utf-8")
        try:
            body = await trio.Path(path).read_bytes()
        except OSError:
            logger.warning("cannot read %s", path, exc_info=True)
            return _response(404, b"Not Found\n", "text/plain; charset=utf-8")
        response = _cached(request, body, CONTENT_TYPES[suffix])
        if suffix == ".html":
            response.headers["Content-Security-Policy"] = DEMO_CSP
        return response


def _cached(request: Request, body: bytes, content_type: str) -> Response:
    """200 with an ETag, or 304 when the client already has this version."""
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    if etag in request.headers.get("If-None-Match", ""):
        response = _response(304, b"", None)
    else:
        response = _response(200, body, content_type)
    response.headers["ETag"] = etag
    return response


def _response(status: int, body: bytes, content_type: str | None) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    if content_type is not None:
        headers["Content-Type"] = content_type
    if status != 304:
        headers["Content-Length"] = str(len(body))
    return Response(status, http.HTTPStatus(status).phrase, headers, body)
