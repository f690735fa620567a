"""Where an idle connection's memory goes: tracemalloc on an in-process server.

    python -m benchmarks.memprofile              # 1,000 idle connections
    python -m benchmarks.memprofile --conns 2000 --top 25

Runs ``trioroom.Server(root_notices=False, root_member_list_limit=1)`` (the
benchmark's settings) on 127.0.0.1, opens ``--conns`` WebSocket connections
from a child process of plain blocking sockets, and prints the Python memory
they added, in bytes per connection, grouped by the innermost trioroom line
that allocated it (or by the allocating line when no trioroom frame is on the
stack, as for ``serve_listeners``' tasks). RSS growth is printed too; the
``idle`` workload of the suite measures it the same way, with Node clients.
"""

from __future__ import annotations

import argparse
import base64
import collections
import gc
import os
import socket
import subprocess
import sys
import tracemalloc

import trio

import trioroom

from .procs import HOST, proc_rss_kib


def hold_connections(port: int, count: int) -> None:
    """Child process: open ``count`` upgraded connections, then wait for stdin to close."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        socks.append(sock)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()


def where(trace: tracemalloc.Traceback) -> str:
    for frame in reversed(trace):  # innermost first
        if f"{os.sep}trioroom{os.sep}" in frame.filename:
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    frame = trace[-1]
    return f"({os.path.basename(frame.filename)}:{frame.lineno})"


async def profile(count: int, top: int) -> None:
    server = trioroom.Server(
        root_notices=False,
        root_member_list_limit=1,
        max_connections_per_address=10**9,
        max_handshakes_per_address=10**9,
    )
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(server.serve, HOST, 0)
        gc.collect()
        tracemalloc.start(40)
        before = tracemalloc.take_snapshot()
        rss_before = proc_rss_kib(os.getpid())
        child = await trio.lowlevel.open_process(
            [sys.executable, "-m", "benchmarks.memprofile", "--child", str(port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        with trio.fail_after(120):
            seen = b""
            while b"ready" not in seen:
                chunk = await child.stdout.receive_some()
                if not chunk:
                    raise RuntimeError("the client process ended before its connections")
                seen += chunk
            # The handshakes end in the server's tasks: poll their count.
            while True:
                if len(server.connections) >= count:
                    break
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss_after = proc_rss_kib(os.getpid())
        groups: collections.Counter[str] = collections.Counter()
        for stat in after.compare_to(before, "traceback"):
            groups[where(stat.traceback)] += stat.size_diff
        total = sum(groups.values())
        print(f"{count} idle connections")
        print(f"RSS growth: {(rss_after - rss_before) / count:.1f} KiB/connection (tracing on)")
        print(f"traced Python memory: {total / count:,.0f} B/connection, by allocating line:")
        for place, size in groups.most_common(top):
            print(f"{size / count:8,.0f}  {place}")
        await child.stdin.aclose()
        await child.wait()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        hold_connections(*args.child)
        return
    trio.run(profile, args.conns, args.top)


if __name__ == "__main__":
    main()
