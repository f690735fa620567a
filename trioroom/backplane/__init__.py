"""Backplanes carry room traffic and membership between server processes.

A server always delivers to its own connections directly. The backplane is
told about local membership changes and outgoing room and direct messages so
that it can forward them to other nodes, and it hands traffic from other
nodes back to the server. :class:`LocalBackplane` (the default) has no other
nodes; :mod:`trioroom.backplane.redis` joins nodes through Redis pub/sub.
A backplane sees its server only through the :class:`Node` protocol.
"""

from __future__ import annotations

from .base import Backplane, LocalBackplane, Node

__all__ = ["Backplane", "LocalBackplane", "Node"]
