"""The server-wide budget of queued and replay bytes (issue 14).

Accounting and policy run on in-memory streams under ``autojump_clock``; the
last test runs ``trioroom serve`` with its defaults against real sockets.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import trio
import trio.testing

from benchmarks.procs import proc_rss_kib
from trioroom import CloseCode, Message, Server

from .serveproc import Client, http_get, metric_value, serve_process
from .wire import RawClient, memory_client, wait_until

V1 = ["trioroom.v1"]


def held(server: Server) -> int:
    """Bytes every connection holds, summed from the connections themselves."""
    total = 0
    for conn in server.connections:
        total += conn.queued_bytes + conn._inflight_bytes
        if conn.replay is not None:
            total += conn.replay.buffered_bytes
    return total


async def extended_client(server: Server, nursery: trio.Nursery, **kwargs: Any) -> RawClient:
    raw = await memory_client(server, nursery, subprotocols=V1, read_root_ack=False, **kwargs)
    while (msg := await raw.recv()).event != "trioroom.session":
        pass
    raw.id = json.loads(msg.payload)["id"]
    assert (await raw.recv()).event == "join_ack"
    return raw


async def test_budget_disconnects_the_recipient_whose_frame_does_not_fit(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    budget = 64_000
    server = Server(
        ping_interval=None, root_notices=False, write_timeout=1000, max_buffered_bytes=budget
    )
    # Far below its own queue bounds (1 MiB, 256 frames): only the budget stops it.
    stuck = await memory_client(server, nursery, lockstep=True)
    reader = await memory_client(server, nursery)
    stuck_conn = server.connection(stuck.id)
    assert stuck_conn is not None
    for i in range(100):
        await server.send_to(stuck.id, "blob", b"%04d" % i + b"x" * 996)
        assert server.stats()["buffered_bytes"] == held(server) <= budget
    assert stuck_conn.close_code == CloseCode.SLOW_CONSUMER
    assert stuck_conn.disconnect_reason == "memory_budget"
    assert server.metrics.frames_dropped["memory_budget"] == 1
    await wait_until(lambda: server.connection(stuck.id) is None)
    assert server.metrics.disconnects["memory_budget"] == 1
    # Everything the stuck connection held is given back; others carry on.
    assert server.stats()["buffered_bytes"] == 0
    for _ in range(100):
        await server.send_to(reader.id, "blob", b"x" * 1000)
    for _ in range(100):
        assert (await reader.recv()).event == "blob"
    await wait_until(lambda: server.stats()["buffered_bytes"] == 0)


async def test_budget_with_drop_oldest_drops_the_recipients_oldest_frames(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    budget = 64_000
    server = Server(
        ping_interval=None,
        root_notices=False,
        write_timeout=1000,
        max_buffered_bytes=budget,
        slow_consumer_policy="drop_oldest",
    )
    stuck = await memory_client(server, nursery, lockstep=True)
    stuck_conn = server.connection(stuck.id)
    assert stuck_conn is not None
    for _ in range(200):
        await server.send_to(stuck.id, "blob", b"x" * 1000)
        assert server.stats()["buffered_bytes"] == held(server) <= budget
    assert stuck_conn.close_code is None
    # Each new frame pushed out one old one.
    assert server.metrics.frames_dropped["memory_budget"] >= 100
    assert server.metrics.frames_dropped["slow_consumer"] == 0
    # A frame larger than the whole budget cannot be queued at all.
    assert not await server.send_to(stuck.id, "huge", b"x" * (budget + 1))
    assert server.stats()["buffered_bytes"] == held(server) <= budget
    await stuck.stream.aclose()
    await wait_until(lambda: server.connection(stuck.id) is None)
    assert server.stats()["buffered_bytes"] == 0


async def test_replay_bytes_count_and_are_given_back_when_sessions_end(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = Server(ping_interval=None, root_notices=False, resume_window=5)
    a = await extended_client(server, nursery)
    b = await extended_client(server, nursery)
    plain = await memory_client(server, nursery)
    for who in (a, b, plain):
        await who.join("room")
    for _ in range(20):
        await server.emit("room", "n", b"x" * 500)
    for who in (a, b, plain):
        for _ in range(20):
            await who.recv_until("n")
    # Read but not acknowledged: the replay buffers hold them.
    await wait_until(lambda: held(server) > 2 * 20 * 500)
    assert server.stats()["buffered_bytes"] == held(server)
    # An acknowledgement frees them.
    conn_a = server.connection(a.id)
    assert conn_a is not None and conn_a.replay is not None
    await a.send(Message("root", "trioroom.ack", "", "", str(conn_a.replay.sent).encode()))
    await wait_until(lambda: conn_a.replay is not None and conn_a.replay.buffered_bytes == 0)
    assert server.stats()["buffered_bytes"] == held(server)
    # b's socket vanishes: the session is suspended and keeps queueing.
    await b.stream.aclose()
    await wait_until(lambda: (c := server.connection(b.id)) is not None and c.suspended)
    await server.emit("room", "n", b"y" * 500)
    assert server.stats()["buffered_bytes"] == held(server) > 0
    # The window expires: the session ends and gives back all it held.
    await wait_until(lambda: server.connection(b.id) is None)
    await a.close()
    await plain.close()
    await wait_until(lambda: not server.connections)
    assert server.stats()["buffered_bytes"] == 0
    assert server.stats()["buffered_bytes"] == 0


async def test_defaults_fit_one_address_in_a_two_gib_process() -> None:
    settings = Server().settings
    per_connection = 2 * settings.queue_bytes + settings.resume_buffer_bytes
    # The budget caps what 1,024 connections from one address could hold.
    assert settings.max_buffered_bytes <= 1 << 30
    assert settings.max_connections_per_address * per_connection > settings.max_buffered_bytes
    assert settings.queue_bytes >= settings.max_message_size


# -- the acceptance run: `trioroom serve` with its defaults ---------------------

MESSAGES, SIZE, RATE, READERS = 8000, 4096, 1000, 10
#: Far above what the server needs (~50 MiB idle, a few MiB more here), far
#: below what an unbounded queue would reach: 8,000 x 4 KiB to the stuck
#: reader alone is 32 MiB, and a leak per message shows at once.
RSS_BOUND_KIB = 256 * 1024


async def test_default_serve_feeds_ten_readers_and_closes_a_stuck_one() -> None:
    # No flags but the address: rate limit, queues and budget are the defaults.
    async with serve_process() as server:
        readers = [await Client.connect(server.address) for _ in range(READERS)]
        for reader in readers:
            await reader.join("feed")
        # The stuck reader advertises a tiny receive window and never reads.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(server.address)
        stuck = await RawClient.connect(trio.SocketStream(sock))
        await stuck.send(Message("feed", "join"))
        while (await readers[0].recv_until("new_member", "feed")).payload != stuck.id.encode():
            pass
        sender = await Client.connect(server.address)
        await sender.join("feed")

        received: dict[int, list[int]] = {n: [] for n in range(READERS)}
        all_read = trio.Event()
        peak_rss = 0

        async def read(n: int) -> None:
            while len(received[n]) < MESSAGES:
                msg = await readers[n].recv()
                if msg.event == "blob":
                    assert msg.src == sender.id
                    assert len(msg.payload) == SIZE
                    received[n].append(int(msg.payload[:6]))
            if all(len(got) == MESSAGES for got in received.values()):
                all_read.set()

        async def sample_rss() -> None:
            nonlocal peak_rss
            while True:
                peak_rss = max(peak_rss, proc_rss_kib(server.proc.pid))
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_rss)
            for n in range(READERS):
                nursery.start_soon(read, n)
            pad = b"p" * (SIZE - 6)
            # Generous bounds (8 s of sending), within pytest's 120 s: the
            # machine is slow and shared.
            with trio.fail_after(50):
                start = trio.current_time()
                for i in range(MESSAGES):
                    if i % 10 == 0:
                        # Paced against the clock: 1,000/s on average, however
                        # late one batch was.
                        await trio.sleep_until(start + i / RATE)
                    await sender.send(Message("feed", "blob", "", "", b"%06d" % i + pad))
            with trio.move_on_after(30):
                await all_read.wait()
            nursery.cancel_scope.cancel()
        expected = list(range(MESSAGES))
        for n in range(READERS):
            assert received[n] == expected, f"reader {n}: {len(received[n])} messages"
        assert 0 < peak_rss < RSS_BOUND_KIB, peak_rss

        # The stuck reader was closed by the server: reading now, it finds
        # the end of the stream (or the 4001 close frame) after what was sent.
        code, _ = await stuck.wait_closed()
        assert code in (CloseCode.SLOW_CONSUMER, None)
        with trio.fail_after(60):
            while True:
                text = (await http_get(server.address, "/metrics")).text
                # Every frame written and every connection's bytes given back.
                if metric_value(text, "trioroom_buffered_bytes") == 0:
                    break
                await trio.sleep(0.1)
        assert metric_value(text, "trioroom_disconnects_total", 'reason="slow_consumer"') == 1
        assert metric_value(text, "trioroom_connections") == READERS + 1
        assert "memory_budget" not in text
