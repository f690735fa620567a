"""Scale-out from the command line: ``--redis URL`` and ``--workers N``.

``trioroom serve --redis redis://host:6379/0`` joins this process to every
other trioroom process using the same Redis (and ``--redis-prefix``): they
behave as one server (see ``docs/scaling.md``).

``trioroom serve --workers N --redis URL`` uses every core of one machine:
this process becomes a supervisor that starts N worker processes, each a
full server with its own Redis backplane, all listening on the same port
through ``SO_REUSEPORT`` (the kernel spreads new connections over them). The
supervisor prints the usual ``trioroom serving on ...`` line once every
worker is up, forwards SIGINT/SIGTERM to the workers (they shut down
gracefully), and restarts a worker that dies.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from .backplane import Backplane
from .server import Server
from .settings import Settings

__all__ = [
    "ClusterOptions",
    "ReusePortServer",
    "add_cluster_arguments",
    "check_redis_url",
    "cluster_options",
    "make_server",
    "open_reuse_port_listeners",
    "supervise",
]

logger = logging.getLogger("trioroom.workers")

#: Set by the supervisor in each worker's environment (0, 1, ...).
WORKER_ENV = "TRIOROOM_WORKER_INDEX"
#: Seconds a worker may take to print its serving line.
START_TIMEOUT = 60.0


@attrs.frozen
class ClusterOptions:
    """The scale-out options of ``trioroom serve``."""

    redis: str | None = None
    redis_prefix: str = "trioroom"
    node_ttl: float = 10.0
    redis_outbox_bytes: int = 16 * 1024 * 1024
    redis_outbox_seconds: float = 60.0
    workers: int = 1
    #: Set in a worker process started by the supervisor.
    worker_index: int | None = None

    @property
    def supervisor(self) -> bool:
        """True when this process should start workers instead of serving."""
        return self.workers > 1 and self.worker_index is None


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--redis``, ``--redis-prefix``, ``--node-ttl``, the outbox bounds and ``--workers``."""
    group = parser.add_argument_group(
        "scale-out (several processes as one server; see docs/scaling.md)"
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="join the other trioroom processes using this Redis, e.g. "
        "redis://127.0.0.1:6379/0 [env TRIOROOM_REDIS; default unset: one process]",
    )
    group.add_argument(
        "--redis-prefix",
        metavar="TEXT",
        default=argparse.SUPPRESS,
        help="prefix of the Redis keys and channels; separate clusters sharing one Redis "
        "need different prefixes [env TRIOROOM_REDIS_PREFIX; default trioroom]",
    )
    group.add_argument(
        "--node-ttl",
        metavar="SECONDS",
        type=float,
        default=argparse.SUPPRESS,
        help="liveness key lifetime: the members of a process that died without cleanup "
        "are removed at most about 1.6x this later [env TRIOROOM_NODE_TTL; default 10]",
    )
    group.add_argument(
        "--redis-outbox-bytes",
        metavar="BYTES",
        type=int,
        default=argparse.SUPPRESS,
        help="while Redis is unreachable, keep up to this many bytes of cross-node messages "
        "and send them, in order, when it is back; past it new ones are dropped (counted, "
        "and extended senders get an error); 0 drops them all "
        "[env TRIOROOM_REDIS_OUTBOX_BYTES; default 16777216]",
    )
    group.add_argument(
        "--redis-outbox-seconds",
        metavar="SECONDS",
        type=float,
        default=argparse.SUPPRESS,
        help="drop a cross-node message that waited this long for Redis "
        "[env TRIOROOM_REDIS_OUTBOX_SECONDS; default 60]",
    )
    group.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=argparse.SUPPRESS,
        help="run N worker processes on the same port (SO_REUSEPORT), joined through "
        "--redis [env TRIOROOM_WORKERS; default 1]",
    )


def cluster_options(args: argparse.Namespace, environ: Mapping[str, str]) -> ClusterOptions:
    """Resolve the scale-out options: flag, else ``TRIOROOM_*`` variable, else default.

    Raises ``ValueError`` for a bad value or ``--workers`` without ``--redis``.
    """

    def pick(dest: str, convert: Any) -> Any:
        if hasattr(args, dest):
            return getattr(args, dest)
        raw = environ.get("TRIOROOM_" + dest.upper())
        if raw is None or raw == "":
            return None
        try:
            return convert(raw)
        except ValueError:
            raise ValueError(f"TRIOROOM_{dest.upper()}: invalid value {raw!r}") from None

    values: dict[str, Any] = {}
    for dest, convert in (
        ("redis", str),
        ("redis_prefix", str),
        ("node_ttl", float),
        ("redis_outbox_bytes", int),
        ("redis_outbox_seconds", float),
        ("workers", int),
    ):
        value = pick(dest, convert)
        if value is not None:
            values[dest] = value
    index = environ.get(WORKER_ENV)
    if index is not None:
        values["worker_index"] = int(index)
    options = ClusterOptions(**values)
    if options.workers < 1:
        raise ValueError("--workers must be at least 1")
    if options.node_ttl < 0.3:
        raise ValueError("--node-ttl must be at least 0.3 seconds")
    if options.redis_outbox_bytes < 0 or options.redis_outbox_seconds < 0:
        raise ValueError("--redis-outbox-bytes and --redis-outbox-seconds must not be negative")
    if options.redis:
        check_redis_url(options.redis)
        if importlib.util.find_spec("coredis") is None:
            raise ValueError("--redis needs coredis: pip install 'trioroom[redis]'")
    if options.workers > 1 and not options.redis:
        raise ValueError(
            "--workers needs --redis URL: the workers share rooms through Redis "
            "(start one with: redis-server --port 6379)"
        )
    return options


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` looks like a Redis URL."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"not a Redis URL: {url!r} (redis://host:port/db, rediss://... or unix:///path)"
        )


def make_backplane(options: ClusterOptions) -> Backplane | None:
    """A :class:`~trioroom.backplane.redis.RedisBackplane`, or ``None`` without ``--redis``."""
    if not options.redis:
        return None
    from .backplane.redis import RedisBackplane

    return RedisBackplane(
        options.redis,
        prefix=options.redis_prefix,
        node_ttl=options.node_ttl,
        outbox_bytes=options.redis_outbox_bytes,
        outbox_seconds=options.redis_outbox_seconds,
    )


def make_server(options: ClusterOptions, settings: Settings) -> Server:
    """The server of this process: with the Redis backplane if configured.

    A worker started by :func:`supervise` listens with ``SO_REUSEPORT``.
    """
    backplane = make_backplane(options)
    if options.worker_index is not None:
        return _WorkerServer(settings, backplane=backplane)
    return Server(settings, backplane=backplane)


# -- SO_REUSEPORT listeners -------------------------------------------------------


async def open_reuse_port_listeners(
    port: int, host: str | None = None, *, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Like :func:`trio.open_tcp_listeners`, with ``SO_REUSEPORT`` set.

    Several processes can listen on the same port; the kernel balances new
    connections between them.
    """
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Windows
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this platform")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog or 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class ReusePortServer(Server):
    """A :class:`~trioroom.Server` whose :meth:`serve` listens with ``SO_REUSEPORT``."""

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await open_reuse_port_listeners(port, host)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(self.serve_listeners, listeners)
            host_name, port_number = addresses[0][:2]
            task_status.started((host_name, port_number))


class _WorkerServer(ReusePortServer):
    """A worker: also stops (like on SIGTERM) when its supervisor is gone.

    The supervisor holds the other end of the worker's stdin; end of file
    means it died, even by SIGKILL, so no worker is left behind.
    """

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_exit_with_supervisor)

            async def run(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
                await ReusePortServer.serve(self, host, port, task_status=task_status)
                nursery.cancel_scope.cancel()

            task_status.started(await nursery.start(run))


async def _exit_with_supervisor() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(1024):
            pass
    logger.warning("supervisor gone: shutting down")
    os.kill(os.getpid(), signal.SIGTERM)


# -- the supervisor ------------------------------------------------------------------


def supervise(
    options: ClusterOptions, argv: Sequence[str] | None, host: str, port: int, path: str
) -> int:
    """Run ``options.workers`` worker processes on ``host``:``port`` until a signal.

    ``argv`` is the command line of this process (without the program
    name); each worker gets it again, with the port fixed. Returns the exit
    status: 0 when every worker stopped cleanly.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    return trio.run(_Supervisor(options, arguments, host, port, path).run)


class _Supervisor:
    def __init__(
        self, options: ClusterOptions, argv: list[str], host: str, port: int, path: str
    ) -> None:
        self.options = options
        self.argv = argv
        self.host = host
        self.port = port
        self.path = path
        self.stopping = False
        self.failed = False
        self.processes: dict[int, trio.Process] = {}
        self.all_gone = trio.Event()

    def _command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "trioroom", *self.argv, "--port", str(port)]

    async def run(self) -> int:
        # Hold the port while the workers bind it, so port 0 gives them all
        # the same one. The socket never listens, so it takes no connections.
        reserve = _reserve_port(self.host, self.port)
        port = reserve.getsockname()[1]
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                ready: list[trio.Event] = []
                for index in range(self.options.workers):
                    event = trio.Event()
                    ready.append(event)
                    nursery.start_soon(self._keep_worker, index, port, event)
                try:
                    with trio.fail_after(START_TIMEOUT):
                        for event in ready:
                            await event.wait()
                            if self.failed:
                                break
                except trio.TooSlowError:
                    logger.error("workers did not start within %gs", START_TIMEOUT)
                    self.failed = True
                reserve.close()
                if self.failed:
                    self._signal_all(signal.SIGTERM)
                    self.stopping = True
                else:
                    shown = f"[{self.host}]" if ":" in self.host else self.host
                    sys.stdout.write(f"trioroom serving on ws://{shown}:{port}{self.path}\n")
                    sys.stdout.flush()
                    logger.info(
                        "%d workers on port %d, joined through %s",
                        self.options.workers,
                        port,
                        self.options.redis,
                    )
                    async for signum in signals:
                        # Workers shut down gracefully on the first signal and
                        # cut the wait short on the second, like one server.
                        self.stopping = True
                        self._signal_all(signum)
                        if not self.processes:
                            break
                        nursery.start_soon(self._stop_when_all_gone, nursery)
        return 1 if self.failed else 0

    async def _stop_when_all_gone(self, nursery: trio.Nursery) -> None:
        if self.processes:
            await self.all_gone.wait()
        nursery.cancel_scope.cancel()

    def _signal_all(self, signum: int) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)

    async def _keep_worker(self, index: int, port: int, ready: trio.Event) -> None:
        """Run worker ``index``; restart it (with backoff) if it dies on its own."""
        delay = 0.5
        env = dict(os.environ, **{WORKER_ENV: str(index)})
        first = True
        while True:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self._command(port), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            self.processes[index] = process
            if self.stopping:
                process.send_signal(signal.SIGTERM)
            try:
                assert process.stdout is not None
                line = await _read_line(process.stdout)
                if line.startswith("trioroom serving on"):
                    if first:
                        ready.set()
                    first = False
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_forward, process.stdout)
                        await process.wait()
                else:
                    await process.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
                    del self.processes[index]
                    if not self.processes and self.stopping:
                        self.all_gone.set()
            if self.stopping:
                return
            if first:
                logger.error(
                    "worker %d exited with status %s before serving", index, process.returncode
                )
                self.failed = True
                ready.set()
                return
            logger.warning(
                "worker %d (pid %d) exited with status %s; restarting it",
                index,
                process.pid,
                process.returncode,
            )
            if trio.current_time() - started > 30:
                delay = 0.5
            await trio.sleep(delay)
            delay = min(delay * 2, 10.0)
            if self.stopping:
                return


def _reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


async def _forward(stream: trio.abc.ReceiveStream) -> None:
    """Copy a worker's later stdout to ours (workers rarely print more)."""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
