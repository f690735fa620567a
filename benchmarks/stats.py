"""Latency histograms from the generators: merge and percentiles.

The Node side keeps a log-bucketed histogram of microseconds: bucket 0 holds
values under 1 us, bucket i >= 1 holds [base**(i-1), base**i) with base 1.02,
so every percentile is known to within 2 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Hist:
    def __init__(self, base: float = 1.02) -> None:
        self.base = base
        self.buckets: dict[int, float] = {}
        self.n = 0.0
        self.sum = 0.0
        self.min: float | None = None
        self.max = 0.0

    @classmethod
    def merge(cls, parts: Iterable[dict[str, Any] | None]) -> Hist:
        h = cls()
        for p in parts:
            if not p:
                continue
            h.base = p.get("base", h.base)
            for k, v in p["buckets"].items():
                i = int(k)
                h.buckets[i] = h.buckets.get(i, 0.0) + v
            h.n += p["n"]
            h.sum += p["sum"]
            if p.get("min") is not None:
                h.min = p["min"] if h.min is None else min(h.min, p["min"])
            h.max = max(h.max, p.get("max") or 0.0)
        return h

    def value(self, i: int) -> float:
        """Representative value of bucket i (geometric middle), in us."""
        if i <= 0:
            return 0.5
        return self.base ** (i - 0.5)

    def percentile(self, q: float) -> float | None:
        """q in [0, 100]; microseconds."""
        if self.n <= 0:
            return None
        rank = q / 100.0 * self.n
        seen = 0.0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                v = self.value(i)
                if self.max:
                    v = min(v, self.max)
                if self.min is not None:
                    v = max(v, self.min)
                return v
        return self.max

    def mean(self) -> float | None:
        return self.sum / self.n if self.n else None

    def summary_ms(self) -> dict[str, float | None]:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v / 1000.0, 3)

        return {
            "n": int(self.n),
            "p50_ms": ms(self.percentile(50)),
            "p90_ms": ms(self.percentile(90)),
            "p99_ms": ms(self.percentile(99)),
            "p999_ms": ms(self.percentile(99.9)),
            "max_ms": ms(self.max if self.n else None),
            "mean_ms": ms(self.mean()),
        }

    def cdf_points(self, max_points: int = 300) -> list[tuple[float, float]]:
        """(latency_ms, fraction <= latency) pairs, for charts."""
        if self.n <= 0:
            return []
        pts: list[tuple[float, float]] = []
        seen = 0.0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            upper = self.base**i if i > 0 else 1.0
            pts.append((upper / 1000.0, seen / self.n))
        if len(pts) > max_points:
            step = math.ceil(len(pts) / max_points)
            pts = [*pts[::step], pts[-1]]
        return pts

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "n": self.n,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
        }
