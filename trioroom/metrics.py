"""Counters of one server, readable from Python and exported to Prometheus.

The hot path only adds to plain integers; :class:`PrometheusCollector`
reads them when ``/metrics`` is scraped, so metrics cost nothing between
scrapes and there is no global registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from .codes import CloseCode

__all__ = ["KNOWN_CLOSE_CODES", "Metrics", "PrometheusCollector", "close_code_label"]

#: Close codes counted as themselves: those of RFC 6455 and the IANA registry
#: (1000-1015) and the server's own (:class:`~trioroom.CloseCode`).
KNOWN_CLOSE_CODES = frozenset(range(1000, 1016)) | frozenset(
    value for value in vars(CloseCode).values() if isinstance(value, int)
)


def close_code_label(code: int) -> int | str:
    """``code`` if it is in :data:`KNOWN_CLOSE_CODES`, else its range (``"4xxx"``).

    A peer may close with any code from 3000 to 4999; counting each as its
    own label would let one client create thousands of metric series.
    """
    code = int(code)
    if code in KNOWN_CLOSE_CODES:
        return code
    if 1000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


@attrs.define(eq=False)
class Metrics:
    """Running totals of one :class:`~trioroom.Server`."""

    connections_opened: int = 0
    connections_closed: int = 0
    #: Handshakes refused, by HTTP status.
    handshakes_rejected: Counter[int] = attrs.field(factory=Counter)
    messages_in: int = 0
    bytes_in: int = 0
    #: Frames put in outbound queues (a broadcast to N members counts N).
    messages_out: int = 0
    bytes_out: int = 0
    #: Broadcasts and room emits, and the deliveries they made.
    broadcasts: int = 0
    fanout_deliveries: int = 0
    #: Inbound or outbound frames dropped, by reason.
    frames_dropped: Counter[str] = attrs.field(factory=Counter)
    #: Connections closed, by reason (``peer``, ``slow_consumer``, ...).
    disconnects: Counter[str] = attrs.field(factory=Counter)
    #: Connections closed, by WebSocket close code. Codes a peer sent that
    #: are not in :data:`KNOWN_CLOSE_CODES` are counted by range (``"4xxx"``).
    close_codes: Counter[int | str] = attrs.field(factory=Counter)
    handler_errors: int = 0
    #: ``on_disconnect`` hooks cancelled at ``hook_timeout``.
    hook_timeouts: int = 0
    handler_calls: int = 0
    handler_seconds: float = 0.0
    heartbeat_failures: int = 0
    #: Cross-node operations that failed (Redis backplane).
    backplane_errors: int = 0
    #: Cross-node messages received twice (a batch sent again after the
    #: publisher's Redis connection broke) and delivered once.
    backplane_duplicates: int = 0
    #: Plain HTTP responses (health, metrics, static files), by status.
    http_responses: Counter[int] = attrs.field(factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """A snapshot as plain Python values."""
        return {
            key: dict(value) if isinstance(value, Counter) else value
            for key, value in attrs.asdict(self, recurse=False).items()
        }


#: Help texts of the live gauges (``Server.stats()`` keys).
GAUGE_HELP = {
    "connections": "Open WebSocket connections",
    "rooms": "Rooms with at least one member",
    "queued_frames": "Frames waiting in outbound queues, all connections",
    "queued_bytes": "Bytes waiting in outbound queues, all connections",
    "backplane_up": "1 while the backplane reaches the other nodes (always, in one process)",
    "buffered_bytes": "Bytes queued, being written or kept for replay, all connections",
}

#: Plain counters: Metrics attribute -> help text.
COUNTER_HELP = {
    "connections_opened": "Connections accepted",
    "connections_closed": "Connections closed",
    "messages_in": "Messages received from clients",
    "bytes_in": "Bytes of messages received from clients",
    "messages_out": "Frames queued to clients",
    "bytes_out": "Bytes of frames queued to clients",
    "broadcasts": "Room broadcasts and emits",
    "fanout_deliveries": "Deliveries made by broadcasts",
    "handler_errors": "Handler and hook calls that raised",
    "hook_timeouts": "Disconnect hooks cancelled at hook_timeout",
    "heartbeat_failures": "Pings not answered in time",
    "backplane_errors": "Failed cross-node operations",
    "backplane_duplicates": "Cross-node messages received twice and delivered once",
}

#: Labelled counters: Metrics attribute -> (help text, label name).
LABELLED_HELP = {
    "frames_dropped": ("Frames dropped, by reason", "reason"),
    "disconnects": ("Connections closed, by reason", "reason"),
    "close_codes": ("Connections closed, by WebSocket close code", "code"),
    "handshakes_rejected": ("WebSocket handshakes refused, by HTTP status", "status"),
    "http_responses": ("Plain HTTP responses, by status", "status"),
}


class PrometheusCollector:
    """A prometheus-client collector reading a :class:`Metrics` and live gauges.

    ``gauges`` returns the current connections, rooms and queue fill when
    called; register the collector on a ``CollectorRegistry`` of your own.
    """

    def __init__(
        self, metrics: Metrics, gauges: Callable[[], dict[str, float]], prefix: str = "trioroom"
    ) -> None:
        self._metrics = metrics
        self._gauges = gauges
        self._prefix = prefix

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        p = self._prefix
        m = self._metrics
        for name, value in self._gauges().items():
            doc = GAUGE_HELP.get(name, name.replace("_", " "))
            yield GaugeMetricFamily(f"{p}_{name}", doc, value=value)
        for attr, doc in COUNTER_HELP.items():
            yield CounterMetricFamily(f"{p}_{attr}", doc, value=getattr(m, attr))
        for name, (doc, label) in LABELLED_HELP.items():
            family = CounterMetricFamily(f"{p}_{name}", doc, labels=[label])
            counter: Counter[Any] = getattr(m, name)
            for key, value in sorted(counter.items(), key=lambda kv: str(kv[0])):
                family.add_metric([str(key)], value)
            yield family
        yield SummaryMetricFamily(
            f"{p}_handler_duration_seconds",
            "Time spent in event handlers (count is the number of calls)",
            count_value=m.handler_calls,
            sum_value=m.handler_seconds,
        )
