"""trioroom as an ASGI application, for Hypercorn and the frameworks it serves.

``Server.asgi_app()`` gives the :class:`~trioroom.engines.asgi.ASGIApp` of a
server of yours; :func:`from_environment` makes the server too, set up like
``trioroom serve`` from the ``TRIOROOM_*`` variables, for a command line::

    TRIOROOM_REDIS=redis://127.0.0.1:6379/0 \\
        hypercorn --worker-class trio --workers 4 'trioroom.asgi:from_environment()'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from .cli import settings_from_args
from .engines.asgi import ASGIApp, ASGITransport, Receive, Scope, Send
from .server import Server
from .workers import cluster_options, make_backplane

__all__ = ["ASGIApp", "ASGITransport", "Receive", "Scope", "Send", "from_environment"]


def from_environment(environ: Mapping[str, str] | None = None) -> ASGIApp:
    """An :class:`ASGIApp` for a server set up like ``trioroom serve``, from the environment.

    Every ``TRIOROOM_*`` variable of ``trioroom serve`` that configures the
    server applies (``TRIOROOM_QUEUE_FRAMES``, ``TRIOROOM_ALLOWED_ORIGINS``...),
    and so do the scale-out ones: with ``TRIOROOM_REDIS`` each process joins
    the others through Redis.

    Raises ``ValueError`` for a bad value, and for ``TRIOROOM_WORKERS`` (the
    ASGI server starts the workers).
    """
    env = os.environ if environ is None else environ
    none = argparse.Namespace()
    settings = settings_from_args(none, env)
    cluster = cluster_options(none, env)
    if cluster.workers != 1:
        raise ValueError("TRIOROOM_WORKERS: the ASGI server starts the workers (--workers)")
    return Server(settings, backplane=make_backplane(cluster)).asgi_app()
