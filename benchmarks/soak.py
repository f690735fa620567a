"""Soak test: thousands of connections churning, joining and chatting for a set time.

    python -m benchmarks.soak --connections 2000 --duration 600

Half of the connections are *stable*: they stay for the whole run in rooms of
ten and send numbered messages; every message a stable member sends must
reach every other stable member of its room, so losses are counted exactly.
The other half *churn*: connect, join random rooms (the stable ones too),
chat, and leave, half of them politely and half by dropping the TCP
connection. The report gives connections made, messages sent, delivered and
lost, and the server's memory at the start and the end. Only 127.0.0.1 is
used and every run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from trioroom.protocol import Message


@attrs.define
class Tally:
    connections: int = 0
    churn_cycles: int = 0
    abrupt_closes: int = 0
    sent_stable: int = 0
    sent_churn: int = 0
    expected: int = 0
    delivered_stable: int = 0
    delivered_pairs: int = 0
    stable_dropped: int = 0
    client_library_errors: int = 0
    delivered_other: int = 0
    errors: int = 0
    stable_ids: set[str] = attrs.Factory(set)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def start_server(extra: list[str], log: Any) -> tuple[trio.Process, str]:
    proc = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trioroom",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-root-notices",
            "--log-level",
            "warning",
            "--max-connections-per-address",
            "1000000",
            "--max-handshakes-per-address",
            "1000000",
            "--rate-limit",
            "1000",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError("server exited before it printed its address")
            line += chunk
    match = re.search(r"ws://\S+", line.decode())
    assert match
    return proc, match.group(0)


async def open_client(
    url: str, nursery: trio.Nursery | None = None
) -> tuple[trio_websocket.WebSocketConnection, str]:
    ws = await trio_websocket.connect_websocket_url(
        nursery or _NURSERY, url, message_queue_size=1024
    )
    ack = Message.decode(await ws.get_message())
    return ws, ack.src


_NURSERY: trio.Nursery


class StableMember:
    def __init__(self, url: str, room: str, tally: Tally) -> None:
        self.url = url
        self.room = room
        self.tally = tally
        self.seq = 0
        self.received: dict[str, int] = {}
        #: Close code when the server dropped this member before the end.
        self.dropped: int | None = None

    async def run(self, go: trio.Event, stop: trio.Event, interval: float) -> None:
        # The member owns its connection's tasks, so a failure of the client
        # library (seen: a pong sent while closing) ends only this member.
        try:
            async with trio.open_nursery() as nursery:
                ws, self.id = await open_client(self.url, nursery)
                self.tally.connections += 1
                self.tally.stable_ids.add(self.id)
                await ws.send_message(Message(self.room, "join").encode())
                self.ws = ws
                await self._chat(go, stop, interval)
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        except* (trio_websocket.ConnectionClosed, LocalProtocolError) as group:
            # Counted, not fatal: a member dropped before the end is left out
            # of the loss accounting and reported separately.
            exc = group.exceptions[0]
            code = exc.reason.code if isinstance(exc, trio_websocket.ConnectionClosed) else 1006
            if not self._drained.is_set():
                self.dropped = code
                self.tally.stable_dropped += 1
            self.done_sending.set()
            self._drained.set()

    async def _chat(self, go: trio.Event, stop: trio.Event, interval: float) -> None:
        ws = self.ws
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read)
            await go.wait()  # every stable member is in its room before anyone sends
            while not stop.is_set():
                await trio.sleep(interval * random.uniform(0.5, 1.5))
                if stop.is_set():
                    break
                self.seq += 1
                payload = b"S%d" % self.seq
                await ws.send_message(Message(self.room, "chat", "", "", payload).encode())
                self.tally.sent_stable += 1
            self.done_sending.set()
            # A direct message to ourselves marks the end: FIFO order means that
            # everything the server queued to us before it has arrived.
            await self.all_sent.wait()
            await ws.send_message(Message(self.room, "__end__", self.id, "", b"").encode())
            await self._drained.wait()
            nursery.cancel_scope.cancel()

    _joined: trio.Event
    done_sending: trio.Event
    all_sent: trio.Event
    _drained: trio.Event

    def prepare(self) -> None:
        self._joined = trio.Event()
        self.done_sending = trio.Event()
        self.all_sent = trio.Event()
        self._drained = trio.Event()

    async def _read(self) -> None:
        stable_ids = self.tally.stable_ids
        while True:
            msg = Message.decode(await self.ws.get_message())
            if msg.event == "join_ack" and msg.room == self.room:
                self._joined.set()
            elif msg.event == "chat":
                if msg.payload.startswith(b"S"):
                    if msg.src in stable_ids:
                        self.received[msg.src] = self.received.get(msg.src, 0) + 1
                        self.tally.delivered_stable += 1
                        continue
                self.tally.delivered_other += 1
            elif msg.event == "__end__":
                self._drained.set()


async def churner(url: str, rooms: list[str], stop: trio.Event, tally: Tally) -> None:
    rng = random.Random()
    while not stop.is_set():
        # Each cycle owns its connection's tasks: a trio-websocket failure in
        # one cycle (seen: a pong sent while closing) ends only that cycle.
        try:
            async with trio.open_nursery() as nursery:
                await churn_once(url, rooms, tally, rng, nursery)
                nursery.cancel_scope.cancel()
        except* (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
            tally.errors += 1
            await trio.sleep(0.5)
        except* LocalProtocolError:
            tally.client_library_errors += 1


async def churn_once(
    url: str, rooms: list[str], tally: Tally, rng: random.Random, nursery: trio.Nursery
) -> None:
    ws, _ = await open_client(url, nursery)
    tally.connections += 1
    for room in rng.sample(rooms, rng.randint(1, 3)):
        await ws.send_message(Message(room, "join").encode())
    for _ in range(rng.randint(1, 5)):
        await trio.sleep(rng.uniform(0.05, 0.5))
        room = rng.choice(rooms)
        await ws.send_message(Message(room, "chat", "", "", b"C" * 48).encode())
        tally.sent_churn += 1
    if rng.random() < 0.5:
        sock: Any = ws._stream.socket  # an abrupt end: TCP reset, no close frame
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(ws._stream)
        tally.abrupt_closes += 1
    else:
        await ws.aclose()
    tally.churn_cycles += 1


async def soak(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    global _NURSERY
    proc, url = await start_server(args.server_arg or [], log)
    tally = Tally()
    stable_count = args.connections // 2
    room_size = 10
    rooms = [f"room-{i}" for i in range(max(1, stable_count // room_size))]
    members: dict[str, list[StableMember]] = {room: [] for room in rooms}
    stable: list[StableMember] = []
    for i in range(stable_count):
        room = rooms[i % len(rooms)]
        member = StableMember(url, room, tally)
        member.prepare()
        members[room].append(member)
        stable.append(member)
    stop = trio.Event()
    go = trio.Event()
    started = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            _NURSERY = nursery
            for member in stable:
                nursery.start_soon(member.run, go, stop, args.message_interval)
                await trio.lowlevel.checkpoint()
            with trio.fail_after(120):
                for member in stable:
                    await member._joined.wait()
            go.set()
            rss_start = rss_kib(proc.pid)
            print(
                f"soak: {stable_count} stable members joined; RSS {rss_start} KiB", file=sys.stderr
            )
            for _ in range(args.connections - stable_count):
                nursery.start_soon(churner, url, rooms, stop, tally)
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                await trio.sleep(min(10, args.duration))
                print(
                    f"soak: {time.monotonic() - started:6.0f}s connections={tally.connections} "
                    f"churn={tally.churn_cycles} sent={tally.sent_stable + tally.sent_churn} "
                    f"delivered={tally.delivered_stable + tally.delivered_other} "
                    f"RSS={rss_kib(proc.pid)} KiB",
                    file=sys.stderr,
                )
            stop.set()
            with trio.fail_after(120):
                for member in stable:
                    await member.done_sending.wait()
            for member in stable:
                member.all_sent.set()
            with trio.fail_after(120):
                for member in stable:
                    await member._drained.wait()
            # Exact accounting over pairs of members that both stayed connected.
            for peers in members.values():
                alive = [m for m in peers if m.dropped is None]
                for receiver in alive:
                    for sender in alive:
                        if sender is not receiver:
                            tally.expected += sender.seq
                            tally.delivered_pairs += receiver.received.get(sender.id, 0)
            rss_end = rss_kib(proc.pid)
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        with trio.move_on_after(15):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    report = {
        "duration_s": round(time.monotonic() - started, 1),
        "connections_target": args.connections,
        "connections_made": tally.connections,
        "churn_cycles": tally.churn_cycles,
        "abrupt_closes": tally.abrupt_closes,
        "messages_sent": tally.sent_stable + tally.sent_churn,
        "stable_messages_sent": tally.sent_stable,
        "stable_deliveries_expected": tally.expected,
        "stable_deliveries": tally.delivered_pairs,
        "lost": tally.expected - tally.delivered_pairs,
        "stable_members_dropped_by_server": tally.stable_dropped,
        "dropped_close_codes": sorted({m.dropped for m in stable if m.dropped is not None}),
        "other_deliveries": tally.delivered_other,
        "client_errors": tally.errors,
        "client_library_errors": tally.client_library_errors,
        "server_rss_start_kib": rss_start,
        "server_rss_end_kib": rss_end,
        "server_exit_code": proc.returncode,
    }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of churn and chat")
    parser.add_argument(
        "--message-interval", type=float, default=10.0, help="seconds between a member's messages"
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument(
        "--server-log", default="soak-server.log", help="where the server's log goes"
    )
    parser.add_argument(
        "--server-arg", action="append", help="extra argument for trioroom serve (repeatable)"
    )
    args = parser.parse_args(argv)
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.server_log, "wb") as log:
        report = trio.run(soak, args, log)
    report["server_errors_logged"] = (
        Path(args.server_log).read_text(errors="replace").count("ERROR")
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
