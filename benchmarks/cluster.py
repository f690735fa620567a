"""Cross-node fan-out through Redis: one process against 2 and 4 workers.

Every configuration serves one room of ``--receivers`` members plus
``--senders`` members that each broadcast to it at a fixed rate (the Node load
generator in ``benchmarks/loadgen``: ``fanout_recv`` and ``chat`` roles). With
``--workers N`` the kernel spreads the connections over N processes
(``SO_REUSEPORT``), so most deliveries cross a node: the sender's worker
publishes each message once to Redis, and every other worker fans it out to
its own members.

The offered rate climbs by ``--step`` from ``--start-rate`` messages per
second; a step is *sustained* when at least 95% of the expected deliveries
arrive within the measured window and the 99th percentile latency stays under
``--max-p99-ms``. The ladder stops at the first step that is not. (Open loop,
on purpose: a sender paced by one acknowledging member would only feel the
node that member is on.)

Configurations (``--configs``):

* ``single``: ``trioroom serve``, no Redis (the baseline, one core).
* ``redis1``: one process with ``--redis`` (the backplane's own overhead).
* ``workers2``, ``workers4``: ``--workers 2`` / ``--workers 4`` with ``--redis``.

Prints, per step and then the best sustained step per configuration,
deliveries per second (messages received by all members in the measured
window, divided by its length), messages per second, delivery latency, and
the CPU used by the servers and by Redis. Run::

    python benchmarks/cluster.py                  # a few minutes
    python benchmarks/cluster.py --configs single,workers2 --json out.json

The machine's core count bounds what workers can gain: on 2 cores the load
generator, Redis and the workers share them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen" / "loadgen.js"
ROOM = "bench"
CONFIGS = {
    "single": (1, False),
    "redis1": (1, True),
    "workers2": (2, True),
    "workers4": (4, True),
}


def now_us() -> float:
    """CLOCK_MONOTONIC in microseconds: the load generator's clock too."""
    return time.monotonic_ns() / 1e3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks


def tree(pid: int) -> list[int]:
    """``pid`` and its direct children (the supervisor and its workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    return pids


class Lines:
    """Reads a process's stdout lines on a thread (JSON lines from loadgen)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")
            self.cond.notify_all()

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if line == "":
                        raise RuntimeError(f"process exited while waiting for {kind!r}")
                    if not line.startswith("{"):
                        continue
                    message: dict[str, Any] = json.loads(line)
                    if message.get("type") == "error":
                        raise RuntimeError(f"load generator: {message.get('message')}")
                    if message.get("type") == kind:
                        del self.lines[:seen]
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind!r} within {timeout}s")
                self.cond.wait(left)


class Loadgen:
    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            ["node", str(LOADGEN), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.out = Lines(self.process.stdout)

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--save", ""),
                *("--appendonly", "no", "--bind", "127.0.0.1"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def start_server(workers: int, redis: Redis | None, tag: str) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "trioroom", "serve", "--port", "0", "--log-level"]
    command += ["error", "--no-root-notices", "--max-handshakes-per-address", "1000000"]
    command += ["--max-connections-per-address", "1000000"]
    if redis is not None:
        command += ["--redis", redis.url, "--redis-prefix", tag]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("trioroom serving on ws://"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return process, port


def percentile(buckets: dict[int, float], base: float, q: float) -> float:
    """Upper edge (µs) of the bucket holding quantile ``q`` of a merged histogram."""
    total = sum(buckets.values())
    if not total:
        return math.nan
    rank = q * total
    seen = 0.0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return float(base**index)
    return float(base ** max(buckets))


def run_step(
    url: str, rate: float, args: argparse.Namespace, pids: list[int], redis: Redis
) -> dict[str, Any]:
    """Offer ``rate`` broadcasts per second to the room; measure what arrives."""
    loadgens: list[Loadgen] = []
    try:
        per = [args.receivers // args.receiver_procs] * args.receiver_procs
        per[0] += args.receivers - sum(per)
        for count in per:
            loadgens.append(
                Loadgen(
                    {
                        "role": "fanout_recv",
                        "url": url,
                        "room": ROOM,
                        "count": count,
                        "concurrency": 50,
                        "deadline_s": args.seconds + 120,
                    }
                )
            )
        interval_ms = 1000 * args.senders / rate
        loadgens.append(
            Loadgen(
                {
                    "role": "chat",
                    "url": url,
                    "rooms": [ROOM] * args.senders,
                    "interval_ms": interval_ms,
                    "payload_size": args.payload,
                    "deadline_s": args.seconds + 120,
                }
            )
        )
        for loadgen in loadgens:
            ready = loadgen.out.expect("ready", 60)
            if ready.get("failed"):
                raise RuntimeError(f"connections failed: {ready}")
        time.sleep(0.5)  # let the last joins reach every node
        t_start = now_us() + 300_000
        m_start = t_start + args.warmup * 1e6
        m_end = m_start + args.seconds * 1e6
        command = {
            "cmd": "start",
            "t_start": t_start,
            "m_start": m_start,
            "m_end": m_end,
            "t_stop": m_end,
            "drain_ms": 300,
            "max_drain_ms": 5_000,
        }
        for loadgen in loadgens:
            loadgen.send(command)
        while now_us() < m_start:
            time.sleep(0.01)
        cpu0 = {pid: cpu_seconds(pid) for pid in pids}
        redis0 = cpu_seconds(redis.process.pid)
        while now_us() < m_end:
            time.sleep(0.01)
        server_cpu = sum(cpu_seconds(pid) - cpu0[pid] for pid in pids)
        redis_cpu = cpu_seconds(redis.process.pid) - redis0
        results = [loadgen.out.expect("result", args.seconds + 60) for loadgen in loadgens]
    finally:
        for loadgen in loadgens:
            loadgen.stop()
    receivers, chat = results[:-1], results[-1]
    sent = sum(chat["sent_by_room"].values())
    received = sum(r["received_in_window"] for r in receivers)
    received += sum(chat["recv_by_room"].values())
    expected = sent * (args.receivers + args.senders - 1)
    buckets: dict[int, float] = {}
    base = 1.02
    for result in results:
        hist = result.get("hist") or {}
        base = hist.get("base", base)
        for key, value in (hist.get("buckets") or {}).items():
            buckets[int(key)] = buckets.get(int(key), 0.0) + value
    p99 = percentile(buckets, base, 0.99) / 1000
    delivered = received / expected if expected else 0.0
    closed = sum(r.get("closed_early", 0) for r in results)
    return {
        "offered_msgs_per_s": rate,
        "messages_per_s": sent / args.seconds,
        "deliveries_per_s": received / args.seconds,
        "delivered_fraction": delivered,
        "latency_p50_ms": percentile(buckets, base, 0.50) / 1000,
        "latency_p99_ms": p99,
        "server_cpu_pct": 100 * server_cpu / args.seconds,
        "server_cpu_us_per_delivery": 1e6 * server_cpu / received if received else math.nan,
        "redis_cpu_pct": 100 * redis_cpu / args.seconds,
        "closed_early": closed,
        "sustained": delivered >= 0.95 and p99 <= args.max_p99_ms and not closed,
    }


def run_config(name: str, args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    """Climb the rate ladder on one configuration until it stops keeping up."""
    workers, with_redis = CONFIGS[name]
    server, port = start_server(workers, redis if with_redis else None, f"bench-{name}")
    url = f"ws://127.0.0.1:{port}/ws"
    steps = []
    try:
        time.sleep(0.5)
        pids = tree(server.pid)
        rate = args.start_rate
        for _ in range(args.max_steps):
            step = run_step(url, rate, args, pids, redis)
            steps.append(step)
            mark = "ok " if step["sustained"] else "   "
            print(
                f"  {name:9} {mark} offered {rate:7,.0f} msg/s -> "
                f"{step['deliveries_per_s']:>10,.0f} deliveries/s "
                f"({100 * step['delivered_fraction']:5.1f}%)  "
                f"p50 {step['latency_p50_ms']:7.1f} ms  p99 {step['latency_p99_ms']:8.1f} ms  "
                f"server CPU {step['server_cpu_pct']:4.0f}% "
                f"({step['server_cpu_us_per_delivery']:.1f} us/delivery)  "
                f"redis {step['redis_cpu_pct']:3.0f}%",
                flush=True,
            )
            if not step["sustained"]:
                break
            rate *= args.step
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    sustained = [s for s in steps if s["sustained"]]
    best = max(sustained, key=lambda s: s["deliveries_per_s"]) if sustained else None
    return {"config": name, "workers": workers, "redis": with_redis, "best": best, "steps": steps}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="single,redis1,workers2,workers4")
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--receiver-procs", type=int, default=2)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--start-rate", type=float, default=400.0, help="msg/s of the first step")
    parser.add_argument("--step", type=float, default=1.4, help="rate factor between steps")
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--max-p99-ms", type=float, default=250.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for tool in ("node", "redis-server"):
        if shutil.which(tool) is None:
            parser.exit(2, f"cluster benchmark: {tool} is not on PATH\n")
    if not (HERE / "loadgen" / "node_modules").exists():
        parser.exit(2, "cluster benchmark: run `npm ci` in benchmarks/loadgen first\n")
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.exit(2, f"unknown configs: {', '.join(sorted(unknown))}\n")

    print(
        f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"{args.receivers} receivers + {args.senders} senders in one room, "
        f"{args.payload}-byte payloads; a step is sustained when >= 95% is delivered "
        f"with p99 <= {args.max_p99_ms:g} ms",
        flush=True,
    )
    redis = Redis()
    rows = []
    try:
        for name in names:
            rows.append(run_config(name, args, redis))
    finally:
        redis.stop()
    print("\nhighest sustained step per configuration:")
    for row in rows:
        best = row["best"]
        if best is None:
            print(f"{row['config']:9} none sustained")
            continue
        print(
            f"{row['config']:9} deliveries/s {best['deliveries_per_s']:>10,.0f}   "
            f"messages/s {best['messages_per_s']:>7,.0f}   p99 {best['latency_p99_ms']:6.1f} ms   "
            f"server CPU {best['server_cpu_pct']:4.0f}% "
            f"({best['server_cpu_us_per_delivery']:.1f} us/delivery)  "
            f"redis CPU {best['redis_cpu_pct']:3.0f}%",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
