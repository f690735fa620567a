"""The server-wide budget of bytes held for clients: outbound queues and replay buffers.

Each connection's queue and replay buffer are bounded on their own, but one
address may hold many connections; the budget bounds their sum, so the memory
of the whole server stays bounded whatever the number of connections. See
"Memory" in ``docs/operations.md``.
"""

from __future__ import annotations

import attrs

__all__ = ["Budget"]


@attrs.define(eq=False)
class Budget:
    """Bytes in use against a limit; kept in step by every queue and replay buffer.

    Only counts: the holders add what they take and subtract what they give
    back, one integer operation per frame. ``fits`` is asked before a frame
    is queued.
    """

    limit: int
    used: int = 0

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within the limit."""
        return self.used + size <= self.limit
