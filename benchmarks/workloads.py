"""The workloads. Each one starts a fresh server, drives it from Node
generator processes, and returns a flat dict of metrics.

Timeline of a measured workload (all on CLOCK_MONOTONIC, shared by every
process of the machine):

    ready ... t_start --warmup--> m_start ==measure==> m_end -tail-> t_stop --drain--> report

Senders run from t_start to t_stop. Latencies count the messages *sent*
inside [m_start, m_end); throughputs count deliveries *received* inside it.
Server CPU is read from /proc at m_start and m_end.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .procs import (
    Gen,
    PeerSpec,
    ServerProc,
    busy_pct,
    cpu_times,
    gather,
    now_us,
    sleep_until_us,
    split,
)
from .stats import Hist


@dataclass
class Settings:
    mode: str = "quick"
    warmup_s: float = 1.0
    duration_s: float = 5.0
    tail_s: float = 0.25
    drain_s: float = 1.0
    max_drain_s: float = 15.0
    payload_size: int = 64
    fanout_sizes: list[int] = field(default_factory=lambda: [200, 1000])
    fanout_window: int = 32
    # At most this many messages sent and not yet received by every receiver
    # of the slowest generator process (its progress is relayed to the sender).
    fanout_lag_window: int = 256
    fanout_receivers_per_proc: int = 500
    chat_conns: int = 1000
    chat_room_size: int = 10
    chat_interval_ms: float = 100.0
    chat_procs: int = 2
    chat_sweep: bool = False
    chat_sweep_duration_s: float = 4.0
    chat_sweep_p99_ms: float = 50.0
    chat_sweep_steps: int = 8
    churn_concurrency: int = 50
    churn_procs: int = 2
    idle_conns: int = 10000
    idle_procs: int = 4
    idle_concurrency: int = 64
    idle_settle_s: float = 1.0
    dm_pairs: list[int] = field(default_factory=lambda: [1, 50])
    connect_concurrency: int = 50
    # Client of the wsrooms load roles: "raw" (minimal RFC 6455 client on
    # net.Socket + bufferutil masking) or "ws" (the ws package). The protocol
    # check always uses the ws package.
    client: str = "raw"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


MODES: dict[str, Settings] = {
    "smoke": Settings(
        mode="smoke",
        warmup_s=0.3,
        duration_s=1.0,
        tail_s=0.1,
        drain_s=0.5,
        fanout_sizes=[20],
        chat_conns=40,
        chat_procs=1,
        churn_concurrency=4,
        churn_procs=1,
        idle_conns=200,
        idle_procs=1,
        idle_settle_s=0.3,
        dm_pairs=[1],
    ),
    "quick": Settings(mode="quick", chat_sweep=True),
    "full": Settings(
        mode="full",
        warmup_s=2.0,
        duration_s=15.0,
        drain_s=2.0,
        chat_sweep=True,
        chat_sweep_duration_s=6.0,
    ),
}


class Ctx:
    """What a workload needs: the peer, the settings, where to log."""

    def __init__(self, spec: PeerSpec, settings: Settings, logdir: Path) -> None:
        self.spec = spec
        self.s = settings
        self.logdir = logdir
        self._n = 0

    def tag(self, name: str) -> str:
        self._n += 1
        return f"{self.spec.name}.{name}.{self._n}"

    @contextlib.contextmanager
    def server(self, name: str) -> Iterator[ServerProc]:
        srv = ServerProc(self.spec, self.logdir, self.tag(name))
        gens: list[Gen] = []
        self._gens = gens
        try:
            srv.wait_ready()
            yield srv
        finally:
            for g in gens:
                with contextlib.suppress(Exception):
                    g.stop()
            srv.stop()

    def gen(
        self,
        srv: ServerProc,
        role: str,
        deadline_s: float,
        on_msg: Callable[[dict[str, Any]], bool] | None = None,
        **cfg: Any,
    ) -> Gen:
        adapter = self.spec.adapter
        if adapter == "wsrooms" and role != "verify" and self.s.client == "raw":
            adapter = "wsrooms-raw"
        g = Gen(
            {
                "role": role,
                "url": srv.url,
                "adapter": adapter,
                "deadline_s": deadline_s,
                **cfg,
            },
            self.logdir,
            self.tag(role),
            on_msg,
        )
        self._gens.append(g)
        return g

    def deadline(self, duration_s: float | None = None) -> float:
        d = self.s.duration_s if duration_s is None else duration_s
        return 150 + self.s.warmup_s + d + self.s.tail_s + self.s.max_drain_s

    def start(self, gens: list[Gen], duration_s: float | None = None) -> dict[str, float]:
        d = self.s.duration_s if duration_s is None else duration_s
        t_start = now_us() + 300_000
        m_start = t_start + self.s.warmup_s * 1e6
        m_end = m_start + d * 1e6
        tl = {
            "t_start": t_start,
            "m_start": m_start,
            "m_end": m_end,
            "t_stop": m_end + self.s.tail_s * 1e6,
            "drain_ms": self.s.drain_s * 1000,
            "max_drain_ms": self.s.max_drain_s * 1000,
        }
        for g in gens:
            g.send({"cmd": "start", **tl})
        return tl

    @staticmethod
    def settle(srv: ServerProc, timeout: float = 60.0) -> float:
        """Wait until the server is quiet (< 10 % of a core over 0.3 s), e.g.
        after the storm of new_member notices of 1,000 joins. Returns seconds."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            c0 = srv.cpu_s()
            time.sleep(0.3)
            if (srv.cpu_s() - c0) / 0.3 < 0.10:
                break
        time.sleep(0.2)
        return round(time.monotonic() - t0, 2)

    @staticmethod
    def server_cpu(srv: ServerProc, tl: dict[str, float]) -> dict[str, float]:
        sleep_until_us(tl["m_start"])
        c0, w0, t0 = srv.cpu_s(), now_us(), cpu_times()
        sleep_until_us(tl["m_end"])
        c1, w1, t1 = srv.cpu_s(), now_us(), cpu_times()
        wall = (w1 - w0) / 1e6
        busy = busy_pct(t0, t1)
        return {
            "server_cpu_s": round(c1 - c0, 3),
            "server_cpu_pct": round(100 * (c1 - c0) / wall, 1) if wall > 0 else 0.0,
            # Whole-machine view: busy % of core 0 (server) and core 1 (generators),
            # whatever ran there. Much more than server/generator CPU = interference.
            "cpu0_busy_pct": busy.get("cpu0"),
            "cpu1_busy_pct": busy.get("cpu1"),
        }

    def collect(self, gens: list[Gen], kind: str = "result") -> list[dict[str, Any]]:
        return gather(gens, kind, timeout=self.s.duration_s + self.s.drain_s + 60)


#: A generator core busier than this (% of core 1) may bound the rates measured.
GEN_SATURATED_PCT = 90.0


def _gen_cpu(results: list[dict[str, Any]]) -> float:
    return round(sum((r.get("window_cpu") or {}).get("cpu_pct", 0.0) for r in results), 1)


def _gen_fields(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Generator CPU (all generator processes share core 1) and the flag set
    when it exceeded GEN_SATURATED_PCT: then the rates of that run may be the
    generator's limit, and server CPU per delivery is the figure to compare."""
    pct = _gen_cpu(results)
    return {"gen_cpu_pct": pct, "gen_saturated": pct > GEN_SATURATED_PCT}


def _cpu_per(cpu: dict[str, float], n: float, one: str, many: str) -> dict[str, float | None]:
    """Server CPU per unit of work in the measured window: ``server_us_per_<one>``
    and ``<many>_per_server_cpu_s``."""
    cpu_s = cpu.get("server_cpu_s") or 0.0
    if n <= 0 or cpu_s <= 0:
        return {f"server_us_per_{one}": None, f"{many}_per_server_cpu_s": None}
    return {
        f"server_us_per_{one}": round(cpu_s * 1e6 / n, 3),
        f"{many}_per_server_cpu_s": round(n / cpu_s),
    }


def _check_ready(ready: list[dict[str, Any]], what: str) -> int:
    failed = sum(r.get("failed", 0) for r in ready)
    if failed:
        errors: dict[str, int] = {}
        for r in ready:
            for k, v in (r.get("errors") or {}).items():
                errors[k] = errors.get(k, 0) + v
        raise RuntimeError(f"{what}: {failed} connections failed: {errors}")
    return sum(r.get("connected", 0) for r in ready)


# --------------------------------------------------------------- fan-out


class _Progress:
    """Relays the fan-out receivers' progress to the sender: each receiver
    process reports the highest seq all of its open sockets have received
    ({"type": "progress"}); the minimum over the processes still holding a
    socket goes to the sender as {"cmd": "acked"} whenever it rises. Runs on
    the generators' reader threads."""

    def __init__(self, nproc: int) -> None:
        self._lock = threading.Lock()
        self._seq = [-1] * nproc
        self._gone = [False] * nproc
        self._acked = -1
        self.sender: Gen | None = None

    def hook(self, i: int) -> Callable[[dict[str, Any]], bool]:
        def on_msg(msg: dict[str, Any]) -> bool:
            if msg.get("type") != "progress":
                return False
            with self._lock:
                if msg.get("gone"):
                    self._gone[i] = True
                else:
                    self._seq[i] = max(self._seq[i], int(msg["seq"]))
                live = [q for q, g in zip(self._seq, self._gone, strict=True) if not g]
                # No receiver left anywhere: nothing to wait for.
                low = min(live) if live else 2**32
                if low > self._acked and self.sender is not None:
                    self._acked = low
                    self.sender.send({"cmd": "acked", "seq": low})
            return True

        return on_msg


def fanout(ctx: Ctx, size: int) -> dict[str, Any]:
    """One sender, a room of `size` receiving members. The sender keeps at
    most `window` messages in flight, acknowledged by a probe member that
    joined the room last (the last one the server fans out to), and at most
    `lag_window` ahead of the slowest receiver process (its progress is
    relayed by _Progress), so that a generator core that reads slower than
    the server sends slows the sender instead of the server closing the
    receivers as slow consumers."""
    s = ctx.s
    room = "fanout"
    with ctx.server(f"fanout{size}") as srv:
        receivers = size - 1  # + the probe, in the sender's process
        shares = split(receivers, max(1, math.ceil(receivers / s.fanout_receivers_per_proc)))
        shares = [n for n in shares if n > 0]
        relay = _Progress(len(shares))
        recvs = [
            ctx.gen(
                srv,
                "fanout_recv",
                ctx.deadline(),
                on_msg=relay.hook(i),
                room=room,
                count=n,
                concurrency=s.connect_concurrency,
            )
            for i, n in enumerate(shares)
        ]
        connected = _check_ready(gather(recvs, "ready", 120), "fanout receivers")
        sender = ctx.gen(
            srv,
            "fanout_send",
            ctx.deadline(),
            room=room,
            window=s.fanout_window,
            lag_window=s.fanout_lag_window if recvs else 0,
            payload_size=s.payload_size,
        )
        sender.expect("ready", 30)
        relay.sender = sender
        settle_s = ctx.settle(srv)
        gens = [*recvs, sender]
        tl = ctx.start(gens)
        cpu = ctx.server_cpu(srv, tl)
        results = ctx.collect(gens)
        rss = srv.rss_kib()
    send_res = results[-1]
    hist = Hist.merge(r["hist"] for r in results)
    delivered = sum(r["received_in_window"] for r in results)
    return {
        "members": connected + 1,
        "window": s.fanout_window,
        "lag_window": s.fanout_lag_window,
        "deliveries_per_s": round(delivered / s.duration_s),
        # The headline: deliveries per server-CPU-second (and µs per delivery),
        # which a generator-bound deliveries/s does not hide.
        **_cpu_per(cpu, delivered, "delivery", "deliveries"),
        "messages_per_s": round(send_res["sent_in_window"] / s.duration_s, 1),
        **{f"latency_{k}": v for k, v in hist.summary_ms().items()},
        **cpu,
        "server_rss_mib": round(rss / 1024, 1),
        **_gen_fields(results),
        "gen_procs": len(gens),
        "closed_early": sum(r.get("closed_early", 0) for r in results),
        "stalls": send_res.get("stalls", 0),
        # How often the slowest receiver process, not the probe, held the sender.
        "held_by_receivers": send_res.get("held_by_receivers", 0),
        "settle_s": settle_s,
        "drain_s": round(max(r.get("drain_s", 0) for r in results), 2),
        "_hist": hist.to_json(),
    }


# --------------------------------------------------------------- chat


def chat(
    ctx: Ctx, interval_ms: float | None = None, duration_s: float | None = None, name: str = "chat"
) -> dict[str, Any]:
    """chat_conns connections in rooms of chat_room_size, each sending one
    payload_size message every interval_ms (a random phase each)."""
    s = ctx.s
    interval = s.chat_interval_ms if interval_ms is None else interval_ms
    dur = s.duration_s if duration_s is None else duration_s
    nrooms = max(1, s.chat_conns // s.chat_room_size)
    rooms = [f"chat-{i % nrooms}" for i in range(s.chat_conns)]
    with ctx.server(name) as srv:
        procs = max(1, min(s.chat_procs, s.chat_conns))
        gens = [
            ctx.gen(
                srv,
                "chat",
                ctx.deadline(dur),
                rooms=rooms[p::procs],
                interval_ms=interval,
                payload_size=s.payload_size,
                concurrency=s.connect_concurrency,
            )
            for p in range(procs)
        ]
        ready = gather(gens, "ready", 120)
        _check_ready(ready, "chat")
        sizes: dict[str, int] = {}
        for r in ready:
            for room in r["rooms"]:
                sizes[room] = sizes.get(room, 0) + 1
        settle_s = ctx.settle(srv)
        tl = ctx.start(gens, dur)
        cpu = ctx.server_cpu(srv, tl)
        results = ctx.collect(gens)
        rss = srv.rss_kib()
    hist = Hist.merge(r["hist"] for r in results)
    lag = Hist.merge(r["send_lag"] for r in results)
    sent: dict[str, int] = {}
    recv: dict[str, int] = {}
    for r in results:
        for k, v in r["sent_by_room"].items():
            sent[k] = sent.get(k, 0) + v
        for k, v in r["recv_by_room"].items():
            recv[k] = recv.get(k, 0) + v
    expected = sum(n * (sizes.get(room, 1) - 1) for room, n in sent.items())
    received = sum(recv.values())
    sent_n = sum(sent.values())
    return {
        "connections": s.chat_conns,
        "room_size": s.chat_room_size,
        "interval_ms": interval,
        "offered_msgs_per_s": round(sent_n / dur, 1),
        "deliveries_per_s": round(received / dur),
        "expected_deliveries": expected,
        "received_deliveries": received,
        "lost": max(0, expected - received),
        "loss_pct": round(100 * max(0, expected - received) / expected, 4) if expected else None,
        **{f"latency_{k}": v for k, v in hist.summary_ms().items()},
        "send_lag_p99_ms": lag.summary_ms()["p99_ms"],
        **cpu,
        **_cpu_per(cpu, sent_n, "msg", "msgs"),
        **_cpu_per(cpu, received, "delivery", "deliveries"),
        "server_rss_mib": round(rss / 1024, 1),
        **_gen_fields(results),
        "gen_procs": len(gens),
        "closed_early": sum(r.get("closed_early", 0) for r in results),
        "settle_s": settle_s,
        "drain_s": round(max(r.get("drain_s", 0) for r in results), 2),
        "_hist": hist.to_json(),
    }


def chat_sweep(ctx: Ctx, progress: Any = None) -> dict[str, Any]:
    """Highest offered rate at which chat p99 stays under the bound with no
    loss: geometric steps up from the base rate (down if the base fails),
    then one bisection between the last pass and the first failure."""
    s = ctx.s
    base_rate = s.chat_conns * 1000.0 / s.chat_interval_ms
    steps: list[dict[str, Any]] = []

    def attempt(rate: float) -> bool:
        interval = s.chat_conns * 1000.0 / rate
        r = chat(ctx, interval_ms=interval, duration_s=s.chat_sweep_duration_s, name="sweep")
        ok = (
            r["latency_p99_ms"] is not None
            and r["latency_p99_ms"] < s.chat_sweep_p99_ms
            and r["lost"] == 0
        )
        steps.append(
            {
                "offered_msgs_per_s": round(rate),
                "p99_ms": r["latency_p99_ms"],
                "lost": r["lost"],
                "server_cpu_pct": r["server_cpu_pct"],
                "server_us_per_msg": r["server_us_per_msg"],
                "gen_cpu_pct": r["gen_cpu_pct"],
                "gen_saturated": r["gen_saturated"],
                "ok": ok,
            }
        )
        if progress:
            progress(
                f"    sweep {rate:,.0f} msg/s in: p99 {r['latency_p99_ms']} ms, "
                f"lost {r['lost']} -> {'ok' if ok else 'over'}"
            )
        return ok

    best: float | None = None
    first_fail: float | None = None
    rate = base_rate
    factor = 1.5
    if attempt(rate):
        best = rate
        while len(steps) < s.chat_sweep_steps - 1:
            rate *= factor
            if attempt(rate):
                best = rate
            else:
                first_fail = rate
                break
    else:
        first_fail = rate
        while len(steps) < s.chat_sweep_steps - 1 and rate > 100:
            rate /= factor
            if attempt(rate):
                best = rate
                break
            first_fail = rate
    if best is not None and first_fail is not None and len(steps) < s.chat_sweep_steps:
        mid = math.sqrt(best * first_fail)
        if attempt(mid):
            best = mid
    return {
        "p99_bound_ms": s.chat_sweep_p99_ms,
        "max_msgs_per_s": round(best) if best else 0,
        "max_deliveries_per_s": round(best * (s.chat_room_size - 1)) if best else 0,
        # Generator CPU of the steps: above 90 % the sweep may have found the
        # generator's limit, not the server's.
        "gen_cpu_pct": max((st["gen_cpu_pct"] for st in steps), default=None),
        "gen_saturated": any(st["gen_saturated"] for st in steps if st["ok"]),
        "steps": steps,
    }


# --------------------------------------------------------------- churn


def churn(ctx: Ctx) -> dict[str, Any]:
    """Workers looping connect -> root join_ack -> join a room -> close
    (closing handshake done), each in its own room."""
    s = ctx.s
    with ctx.server("churn") as srv:
        gens = [
            ctx.gen(srv, "churn", ctx.deadline(), concurrency=c)
            for c in split(s.churn_concurrency, s.churn_procs)
        ]
        gather(gens, "ready", 30)
        tl = ctx.start(gens)
        cpu = ctx.server_cpu(srv, tl)
        results = ctx.collect(gens)
        rss = srv.rss_kib()
    hist = Hist.merge(r["hist"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in (r.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + v
    cycles = sum(r["cycles_in_window"] for r in results)
    return {
        "concurrency": s.churn_concurrency,
        "cycles_per_s": round(cycles / s.duration_s, 1),
        **{f"cycle_{k}": v for k, v in hist.summary_ms().items()},
        "errors": sum(r["errors_n"] for r in results),
        "error_kinds": errors,
        **cpu,
        **_cpu_per(cpu, cycles, "cycle", "cycles"),
        "server_rss_mib": round(rss / 1024, 1),
        **_gen_fields(results),
        "gen_procs": len(gens),
    }


# --------------------------------------------------------------- idle memory


def idle(ctx: Ctx) -> dict[str, Any]:
    """Open idle_conns connections (each gets its root join_ack), then read
    the server's RSS growth. Setup time: start signal -> last join_ack."""
    s = ctx.s
    with ctx.server("idle") as srv:
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        cpu0 = srv.cpu_s()
        gens = [
            ctx.gen(srv, "idle", 180, count=n, concurrency=s.idle_concurrency)
            for n in split(s.idle_conns, s.idle_procs)
        ]
        gather(gens, "ready", 30)
        t0 = now_us() + 200_000
        for g in gens:
            g.send({"cmd": "start", "t_start": t0})
        sleep_until_us(t0)
        busy0, wall0, cpu_t0 = cpu_times(), now_us(), srv.cpu_s()
        done = gather(gens, "connected", 150)
        t_done = max(d["t_done"] for d in done)
        cpu1 = srv.cpu_s()
        busy = busy_pct(busy0, cpu_times())
        setup_wall = (now_us() - wall0) / 1e6
        connected = sum(d["connected"] for d in done)
        failed = sum(d["failed"] for d in done)
        time.sleep(s.idle_settle_s)
        rss1 = srv.rss_kib()
        alive_ok = srv.alive()
        for g in gens:
            g.send({"cmd": "stop"})
        results = gather(gens, "result", 30)
    setup = Hist.merge(r["hist"] for r in results)
    errors: dict[str, int] = {}
    for d in done:
        for k, v in (d.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + v
    return {
        "connections": connected,
        "failed": failed,
        "error_kinds": errors,
        "setup_s": round((t_done - t0) / 1e6, 2),
        "connects_per_s": round(connected / ((t_done - t0) / 1e6)) if t_done > t0 else None,
        "rss_before_mib": round(rss0 / 1024, 1),
        "rss_after_mib": round(rss1 / 1024, 1),
        "kib_per_conn": round((rss1 - rss0) / connected, 2) if connected else None,
        "setup_server_cpu_s": round(cpu1 - cpu0, 2),
        # During the setup: server CPU and how busy core 0 was (interference check).
        "server_cpu_pct": round(100 * (cpu1 - cpu_t0) / setup_wall, 1) if setup_wall > 0 else None,
        "cpu0_busy_pct": busy.get("cpu0") if setup_wall >= 1.0 else None,
        "closed_early": sum(r.get("closed_early", 0) for r in results),
        "server_alive": alive_ok,
        "gen_procs": len(gens),
        "connect_time_p99_ms": setup.summary_ms()["p99_ms"],
    }


# --------------------------------------------------------------- direct messages


def dm(ctx: Ctx, pairs: int) -> dict[str, Any]:
    """`pairs` pairs A/B: A sends a DM to B, B answers with a DM to A, A
    measures the round trip and sends the next one (one in flight per pair)."""
    s = ctx.s
    with ctx.server(f"dm{pairs}") as srv:
        g = ctx.gen(srv, "dm", ctx.deadline(), pairs=pairs, payload_size=s.payload_size)
        g.expect("ready", 60)
        tl = ctx.start([g])
        cpu = ctx.server_cpu(srv, tl)
        (res,) = ctx.collect([g])
    hist = Hist.merge([res["hist"]])
    trips = res["round_trips_in_window"]
    return {
        "pairs": pairs,
        "round_trips_per_s": round(trips / s.duration_s, 1),
        **{f"rtt_{k}": v for k, v in hist.summary_ms().items()},
        **cpu,
        # A round trip is two DMs: two messages in, two deliveries out.
        **_cpu_per(cpu, 2 * trips, "msg", "msgs"),
        **_gen_fields([res]),
        "_hist": hist.to_json(),
    }


# --------------------------------------------------------------- protocol check


def verify(ctx: Ctx) -> dict[str, Any]:
    with ctx.server("verify") as srv:
        g = ctx.gen(srv, "verify", 30)
        res = g.expect("result", 30)
    return {"ok": res["ok"], "checks": res["checks"]}


WORKLOADS = ["fanout", "chat", "churn", "idle", "dm"]
