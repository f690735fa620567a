"""The sans-I/O core of the server: room rules, membership and sessions.

:class:`Hub` applies the rules of ``docs/protocol.md`` and returns
:mod:`effects <trioroom.hub.effects>`; :class:`Sessions` keeps the
``trioroom.v1`` sessions. Neither imports trio: the server
(:mod:`trioroom.server`) performs what they decide.
"""

from __future__ import annotations

from .effects import Close, Deliver, Direct, Effect, Fanout, Handle, Join, Leave
from .hub import Hub, Member
from .rooms import Room
from .sessions import ENDED_REASONS, Sessions

__all__ = [
    "ENDED_REASONS",
    "Close",
    "Deliver",
    "Direct",
    "Effect",
    "Fanout",
    "Handle",
    "Hub",
    "Join",
    "Leave",
    "Member",
    "Room",
    "Sessions",
]
