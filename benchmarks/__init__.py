"""trioroom benchmark suite: ``python -m benchmarks`` (docs/benchmarks.md)."""
