"""A connection that dies for any reason leaves all its rooms and no task behind."""

from __future__ import annotations

import random

import trio
from websockets.datastructures import Headers

from trioroom import Connection, Message, Server
from trioroom.handshake import Request

from .wire import RawClient, StartServer, wait_until


class LiveTasks(trio.abc.Instrument):
    """Counts live tasks by name."""

    def __init__(self) -> None:
        self.live: dict[trio.lowlevel.Task, str] = {}

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live[task] = task.name

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.pop(task, None)

    def per_connection(self) -> list[str]:
        return [
            name
            for name in self.live.values()
            if "Connection." in name
            or "handle_stream" in name
            or "_run_handler" in name
            # The ASGI engine's sender, and Hypercorn's task running the ASGI call.
            or "ASGITransport." in name
            or name == "hypercorn.trio.task_group._handle"
        ]


async def test_200_connections_vanishing_abruptly_leave_nothing(
    start_server: StartServer, engine: str
) -> None:
    tasks = LiveTasks()
    trio.lowlevel.add_instrument(tasks)
    try:
        server, address = await start_server(root_notices=False, max_connections_per_address=1000)
        rng = random.Random(7)
        rooms = [f"room-{i}" for i in range(20)]
        clients = []
        for _ in range(200):
            client = await RawClient.connect(address)
            for name in rng.sample(rooms, rng.randint(1, 4)):
                await client.send(Message(name, "join"))
            clients.append(client)
        for client in clients:
            await client.sync()
        assert len(server.connections) == 200
        assert len(await server.rooms()) > 10
        # writer and heartbeat, beside the task serving the stream, which runs
        # the reader (and trio-websocket's own reader task on that engine; on
        # the ASGI engine the reader runs in Hypercorn's ASGI call, beside the
        # sender task)
        per_connection = {"native": 3, "trio-websocket": 4, "asgi": 5}[engine]
        assert len(tasks.per_connection()) == 200 * per_connection
        for client in clients:
            client.reset()  # TCP RST, no close frame
        await wait_until(lambda: not server.connections and not tasks.per_connection())
        assert await server.rooms() == []
        assert server.hub.room_names() == []
        assert server.metrics.connections_closed == 200
        assert not server.admission.slots()
        assert server.stats()["queued_frames"] == 0
    finally:
        trio.lowlevel.remove_instrument(tasks)


async def test_connection_closed_in_the_middle_of_a_join_leaves_no_state(
    start_server: StartServer,
) -> None:
    entered = trio.Event()

    async def authorize_join(conn: Connection, room: str) -> bool:
        entered.set()
        await trio.sleep_forever()
        return True  # pragma: no cover

    server = Server(authorize_join=authorize_join, root_notices=False)
    _, address = await start_server(server)
    a = await RawClient.connect(address)
    await a.send(Message("lobby", "join"))
    await entered.wait()
    assert server.hub.room_names() == ["root"]
    await server.kick(a.id)
    assert not server.connections
    assert server.hub.room_names() == []


async def test_kick_and_shutdown_close_with_codes(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await b.join("lobby")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.kick, a.id, 4000, "bye")
        assert await a.wait_closed() == (4000, "bye")
    assert server.metrics.close_codes[4000] == 1
    await server.send_to(b.id, "last-words", b"flushed before close")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.shutdown)
        assert (await b.recv()).event == "last-words"
        assert await b.wait_closed() == (1001, "server shutting down")
    await wait_until(lambda: not server.connections)
    assert server.hub.room_names() == []


class PeerClosesAt:
    """A transport whose peer closes at a given time and which takes every write."""

    peer_close = (1000, "")
    flooded = False
    direct = False
    protocol_error = None
    unsent = 0

    def __init__(self, at: float) -> None:
        self.at = at
        self.closed = False

    def attach(self, wake_writer: object) -> None:
        pass

    async def receive(self) -> bytes | None:
        await trio.sleep_until(self.at)
        return None

    def next_buffered(self) -> bytes | None:
        return None

    def send_now(self, data: bytes) -> bool:
        raise AssertionError("not a direct transport")

    async def write(self, frames: list[bytes]) -> None:
        await trio.lowlevel.checkpoint()

    async def ping(self) -> None:
        await trio.sleep_forever()

    async def close(self, code: int, reason: str, pending: list[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True

    async def abort(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True


async def test_a_peer_closing_as_the_heartbeat_wakes_ends_the_connection_cleanly(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The peer's close and the heartbeat's tick fall due at the same instant,
    # so the heartbeat is cancelled by its deadline just before the reader
    # sees the close (in half the runs: trio runs a batch in either order).
    # The reader must not wake the heartbeat a second time.
    server = Server(ping_interval=None, write_timeout=2.0)  # a tick every second
    for _ in range(20):
        start = trio.current_time()
        transport = PeerClosesAt(start + 1.0)
        request = Request("/ws", Headers([("Host", "localhost")]), "127.0.0.1")
        with trio.fail_after(10):
            await server.handle_transport(transport, request, None)
        assert transport.closed
        assert trio.current_time() == start + 1.0
    assert server.metrics.connections_opened == server.metrics.connections_closed == 20
