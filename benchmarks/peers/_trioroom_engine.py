"""The ``trioroom`` peer's server, for the peers that serve it through another engine.

The same settings as ``python -m trioroom serve --no-root-notices
--root-member-list-limit 1`` with the benchmark's per-address limits lifted,
and the same GC settings, so that only the engine differs between the
``trioroom``, ``trioroom_tws`` and ``asgi`` peers.
"""

from __future__ import annotations

import logging

from trioroom import Server
from trioroom.cli import tune_gc


def make_server() -> Server:
    logging.basicConfig(level=logging.WARNING)
    server = Server(
        root_notices=False,
        root_member_list_limit=1,
        max_connections_per_address=1_000_000,
        max_handshakes_per_address=1_000_000,
    )
    tune_gc(50_000)
    return server
