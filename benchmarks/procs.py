"""Processes of a benchmark run: the server under test and the load generators.

Everything here talks to 127.0.0.1 only and every process is bounded in time:
servers are killed when their workload ends, generators carry a deadline and
exit by themselves.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
LOADGEN = BENCH / "loadgen"
HOST = "127.0.0.1"
SERVER_CPU = "0"
LOADGEN_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def now_us() -> float:
    """CLOCK_MONOTONIC in microseconds: the clock of the Node generators too."""
    return time.monotonic_ns() / 1e3


def sleep_until_us(t_us: float) -> None:
    delay = (t_us - now_us()) / 1e6
    if delay > 0:
        time.sleep(delay)


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: Sequence[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if have_taskset() else list(cmd)


def ensure_loadgen() -> None:
    """``npm ci`` the generator's packages from the committed lock file."""
    if (LOADGEN / "node_modules" / "ws").is_dir() and (
        LOADGEN / "node_modules" / "socket.io-client"
    ).is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: the load generator needs Node.js and npm")
    log("installing the load generator: npm ci --prefix benchmarks/loadgen")
    subprocess.run(
        [npm, "ci", "--prefix", str(LOADGEN), "--no-audit", "--no-fund"],
        check=True,
        stdout=sys.stderr,
        timeout=600,
    )


# --------------------------------------------------------------- /proc readers


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_times() -> dict[str, tuple[float, float]]:
    """Per-CPU (busy, total) seconds from /proc/stat, where busy is user +
    nice + system + steal time: the time of processes. Interrupt and softirq
    time is left out: on loopback it is mostly the benchmark's own packets."""
    out: dict[str, tuple[float, float]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            busy = v[0] + v[1] + v[2] + v[7]
            total = sum(v)
            out[name] = (busy / CLK_TCK, total / CLK_TCK)
    return out


CpuTimes = dict[str, tuple[float, float]]


def busy_pct(a: CpuTimes, b: CpuTimes) -> dict[str, float]:
    """% busy of each CPU between two cpu_times() readings."""
    res: dict[str, float] = {}
    for name in b:
        if name in a:
            db, dt = b[name][0] - a[name][0], b[name][1] - a[name][1]
            res[name] = round(100 * db / dt, 1) if dt > 0 else 0.0
    return res


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------- servers


@dataclass
class PeerSpec:
    name: str
    label: str
    adapter: str  # "wsrooms" or "socketio"
    argv: list[str]  # {host} and {port} are substituted
    note: str = ""

    def command(self, port: int) -> list[str]:
        return [a.format(host=HOST, port=port, python=sys.executable) for a in self.argv]


TRIOROOM_BENCH_FLAGS = [
    # A single loopback generator trips these two per-address protections;
    # everything else (queue of 256 frames and 1 MiB, no rate limit,
    # timeouts) stays default.
    "--max-connections-per-address",
    "1000000",
    "--max-handshakes-per-address",
    "1000000",
]

PEERS: dict[str, PeerSpec] = {
    "trioroom": PeerSpec(
        "trioroom",
        "trioroom",
        "wsrooms",
        [
            "{python}",
            "-m",
            "trioroom",
            "serve",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--no-root-notices",
            "--root-member-list-limit",
            "1",
            "--log-level",
            "warning",
            *TRIOROOM_BENCH_FLAGS,
        ],
        "the library: python -m trioroom serve --no-root-notices --root-member-list-limit 1",
    ),
    "asgi": PeerSpec(
        "asgi",
        "trioroom ASGI",
        "wsrooms",
        ["{python}", "benchmarks/peers/asgi_hypercorn.py", "--host", "{host}", "--port", "{port}"],
        "the library's ASGI engine (Server.asgi_app) under Hypercorn's trio worker, "
        "the trioroom peer's settings",
    ),
    "trioroom_tws": PeerSpec(
        "trioroom_tws",
        "trioroom trio-websocket",
        "wsrooms",
        [
            "{python}",
            "benchmarks/peers/trioroom_trio_websocket.py",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ],
        "the library's trio-websocket engine (Server.handle_trio_websocket), "
        "the trioroom peer's settings",
    ),
    "bare_trio": PeerSpec(
        "bare_trio",
        "bare trio",
        "wsrooms",
        [
            "{python}",
            "benchmarks/peers/bare_trio.py",
            "--host",
            "{host}",
            "--port",
            "{port}",
            # The collector settings of trioroom serve: a ceiling run with
            # Python's defaults would not be the ceiling of our stack.
            "--gc-threshold",
            "50000",
        ],
        "trio + websockets sans-I/O, queue + writer task per connection, encode once, "
        "trioroom's GC settings",
    ),
    "bare_direct": PeerSpec(
        "bare_direct",
        "bare direct I/O",
        "wsrooms",
        [
            "{python}",
            "benchmarks/peers/bare_direct.py",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--gc-threshold",
            "50000",
        ],
        "bare_trio's shape with direct I/O: non-blocking send from the delivering task "
        "when the queue is empty, one write per recipient per multi-message read (corking), "
        "one wait_readable + recv per read; trioroom's GC settings",
    ),
    "websockets": PeerSpec(
        "websockets",
        "websockets asyncio",
        "wsrooms",
        [
            "{python}",
            "benchmarks/peers/websockets_asyncio.py",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ],
        "websockets.asyncio.server.serve + broadcast()",
    ),
    "trio_websocket": PeerSpec(
        "trio_websocket",
        "trio-websocket",
        "wsrooms",
        [
            "{python}",
            "benchmarks/peers/trio_websocket_peer.py",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ],
        "trio_websocket.serve_websocket, await send_message per member",
    ),
    "socketio": PeerSpec(
        "socketio",
        "python-socketio",
        "socketio",
        ["{python}", "benchmarks/peers/socketio_peer.py", "--host", "{host}", "--port", "{port}"],
        "python-socketio AsyncServer on aiohttp, socket.io-client as load adapter",
    ),
}


class ServerProc:
    """The server under test, pinned to core 0."""

    def __init__(self, spec: PeerSpec, logdir: Path, tag: str) -> None:
        self.spec = spec
        self.port = free_port()
        self.url = f"ws://{HOST}:{self.port}/ws"
        self.stderr_path = logdir / f"{tag}.server.log"
        self._stderr = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            pinned(spec.command(self.port), SERVER_CPU),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.spec.name}: no URL line within {timeout}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.spec.name} exited (code {self.proc.wait()}): {self.stderr_tail()}"
                )
            m = re.search(r"ws://[^\s:/]+:(\d+)", line)
            if m:
                if int(m.group(1)) != self.port:
                    self.port = int(m.group(1))
                    self.url = f"ws://{HOST}:{self.port}/ws"
                break
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name}: port {self.port} not accepting")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def stderr_tail(self, n: int = 800) -> str:
        try:
            self._stderr.flush()
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._stderr.close()


# --------------------------------------------------------------- generators


@dataclass
class Gen:
    """One Node load generator process, pinned to core 1."""

    cfg: dict[str, Any]
    logdir: Path
    tag: str
    #: Called (on the reader thread) with each message as it arrives; a
    #: message it returns True for is consumed, not queued for expect().
    on_msg: Callable[[dict[str, Any]], bool] | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    msgs: queue.Queue[dict[str, Any] | None] = field(init=False)

    def __post_init__(self) -> None:
        self.msgs = queue.Queue()
        self._send_lock = threading.Lock()
        self._stderr = open(self.logdir / f"{self.tag}.gen.log", "wb")
        env = dict(os.environ)
        env.pop("WS_NO_BUFFER_UTIL", None)
        self.proc = subprocess.Popen(
            pinned(
                # BENCH_NODE_ARGS: extra node flags, e.g. "--cpu-prof" to profile a generator.
                [
                    "node",
                    *os.environ.get("BENCH_NODE_ARGS", "").split(),
                    str(LOADGEN / "loadgen.js"),
                    json.dumps(self.cfg),
                ],
                LOADGEN_CPU,
            ),
            cwd=LOADGEN,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                msg = {"type": "log", "text": line}
            if self.on_msg is not None and self.on_msg(msg):
                continue
            self.msgs.put(msg)
        self.msgs.put(None)

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"generator {self.tag}: no '{kind}' within {timeout:.0f}s")
            try:
                msg = self.msgs.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise RuntimeError(f"generator {self.tag} exited (code {self.proc.wait()})")
            if msg.get("type") == "error":
                raise RuntimeError(f"generator {self.tag}: {msg.get('message', '')[:400]}")
            if msg.get("type") == kind:
                return msg

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        # Several threads may send (the main thread, relays on reader threads).
        with self._send_lock:
            try:
                self.proc.stdin.write((json.dumps(obj) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._stderr.close()


def gather(gens: Sequence[Gen], kind: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    return [g.expect(kind, max(0.1, deadline - time.monotonic())) for g in gens]


def split(n: int, parts: int) -> list[int]:
    """n items in `parts` nearly equal integer shares."""
    parts = max(1, min(parts, n)) if n else 1
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
