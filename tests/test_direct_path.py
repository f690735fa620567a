"""The direct path of the native engine (issue 15), over real sockets.

On a plain socket a delivering task writes a frame itself when the
recipient's queue is empty and its writer idle; what the kernel does not take
waits for the writer. Several messages from one read are corked: each
recipient's frames go out in one write at the end. These tests make the
kernel refuse bytes on purpose (small socket buffers, a client that does not
read) and check that frames stay whole, in order, and ahead of the close frame.
"""

from __future__ import annotations

import socket

import trio
from websockets.frames import Opcode

from trioroom import Connection, Message, Server

from .wire import RawClient, wait_until

BIG = 400_000  # far more than the small socket buffers below hold


async def serve_small_buffers(nursery: trio.Nursery, server: Server) -> tuple[str, int]:
    """Serve on a listener whose accepted sockets have a small send buffer."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    for listener in listeners:
        # Inherited by accepted sockets: the server's writes run short quickly.
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    addresses = await nursery.start(server.serve_listeners, listeners)
    host, port = addresses[0][:2]
    return host, port


async def slow_reader(address: tuple[str, int]) -> RawClient:
    """A client with a small receive buffer, connected and past its root join_ack."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(address)
    return await RawClient.connect(trio.SocketStream(sock))


async def read_to_the_end(client: RawClient) -> list[bytes]:
    """Payloads of the ``n`` frames until the close frame or EOF.

    A cut frame or anything after the close frame would make the client's
    protocol fail; a frame cut by EOF is not returned.
    """
    received: list[bytes] = []
    while True:
        try:
            frame = await client.recv_frame()
        except ConnectionError:
            return received
        if frame.opcode is Opcode.CLOSE:
            return received
        msg = Message.decode(frame.data)
        if msg.event == "n":
            received.append(msg.payload)


async def test_partial_write_waits_for_the_writer_while_new_frames_queue(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False, ping_interval=None, max_message_size=BIG * 2)
    address = await serve_small_buffers(nursery, server)
    reader = await slow_reader(address)
    await reader.join("room")
    # The reader stops reading: the big frame is written only in part, and
    # the rest waits in the server (counted in buffered_bytes).
    await server.emit("room", "big", b"x" * BIG)
    assert server.stats()["buffered_bytes"] > 0
    # Frames delivered meanwhile must queue behind the rest of the big one.
    for i in range(50):
        await server.emit("room", "n", str(i))
    assert server.stats()["queued_frames"] > 0
    big = await reader.recv()
    assert (big.event, big.payload) == ("big", b"x" * BIG)
    got = [(await reader.recv()).payload for _ in range(50)]
    assert got == [str(i).encode() for i in range(50)]
    # Drained: the writer gave the socket back, and the next frame goes direct.
    await wait_until(lambda: server.stats()["buffered_bytes"] == 0)
    await server.emit("room", "after", b"1")
    assert server.stats()["queued_frames"] == 0
    assert (await reader.recv()).event == "after"
    await reader.close()


async def test_recipient_with_a_full_socket_buffer_gets_queued_then_closed(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False, ping_interval=None, queue_frames=64)
    address = await serve_small_buffers(nursery, server)
    stuck = await slow_reader(address)
    await stuck.join("room")
    listener = await RawClient.connect(address)
    await listener.join("room")
    payload = b"y" * 1000
    sent = 0
    # The stuck client's kernel buffers fill first, then its queue; the
    # listener, which reads, must get every frame all the same.
    async with trio.open_nursery() as inner:

        async def read_all() -> None:
            for i in range(2000):
                msg = await listener.recv_until("n")
                assert msg.payload == payload + str(i).encode()

        inner.start_soon(read_all)
        for i in range(2000):
            await server.emit("room", "n", payload + str(i).encode())
            sent += 1
    assert server.metrics.disconnects["slow_consumer"] == 1
    # What reached the stuck client is whole and in order. Its socket was
    # full, so the server could not write a close frame after it: the
    # connection just ends.
    received = await read_to_the_end(stuck)
    assert stuck.close_code in (4001, None)
    assert 0 < len(received) < sent
    assert received == [payload + str(i).encode() for i in range(len(received))]
    await listener.close()


async def test_direct_writes_racing_a_close_never_follow_the_close_frame(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False, ping_interval=None)
    address = await serve_small_buffers(nursery, server)
    victim = await slow_reader(address)
    await victim.join("room")
    other = await RawClient.connect(address)
    await other.join("room")
    count = 300
    received: list[bytes] = []

    async def emit_all() -> None:
        for i in range(count):
            await server.emit("room", "n", b"z" * 2000 + str(i).encode())
            if i == count // 3:
                # Kick from another task while frames keep coming, with part
                # of a frame possibly still waiting in the server.
                nursery.start_soon(server.kick, victim.id)

    async def victim_reads() -> None:
        received.extend(await read_to_the_end(victim))

    async with trio.open_nursery() as inner:
        inner.start_soon(victim_reads)
        inner.start_soon(emit_all)
        got = [await other.recv_until("n") for _ in range(count)]
    assert [m.payload[2000:] for m in got] == [str(i).encode() for i in range(count)]
    # Whole frames, in order, a prefix of what was sent, then the close frame:
    # nothing written directly after it, and no frame cut by it.
    assert victim.close_code == 4000
    assert len(received) < count
    assert [p[2000:] for p in received] == [str(i).encode() for i in range(len(received))]
    await victim.stream.aclose()
    await other.close()


async def test_frames_of_one_read_are_written_before_a_handler_waits(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False, ping_interval=None)
    release = trio.Event()
    entered = trio.Event()

    @server.on("wait")
    async def wait(conn: Connection, msg: Message) -> None:
        entered.set()
        await release.wait()

    address = await nursery.start(server.serve, "127.0.0.1", 0)
    sender = await RawClient.connect(address)
    receiver = await RawClient.connect(address)
    await sender.join("room")
    await receiver.join("room")
    # Three messages in one write, so the server reads them together: the
    # first is corked, and must go out before the handler yields.
    for msg in (Message("room", "m1"), Message("room", "wait"), Message("room", "m2")):
        sender.protocol.send_binary(msg.encode())
    await sender._flush()
    with trio.fail_after(60):
        await entered.wait()
        assert (await receiver.recv()).event == "m1"
    release.set()
    assert (await receiver.recv()).event == "m2"
    await sender.close()
    await receiver.close()


async def test_a_read_of_many_messages_reaches_every_member_in_order(
    nursery: trio.Nursery,
) -> None:
    server = Server(root_notices=False, ping_interval=None)
    address = await nursery.start(server.serve, "127.0.0.1", 0)
    sender = await RawClient.connect(address)
    members = [await RawClient.connect(address) for _ in range(3)]
    await sender.join("room")
    for member in members:
        await member.join("room")
    # Broadcasts, a DM, a join and more broadcasts in one write.
    frames = [Message("room", "n", "", "", str(i)) for i in range(100)]
    frames.append(Message("root", "dm", members[0].id, "", "dm"))
    frames.append(Message("other", "join"))
    frames += [Message("room", "n", "", "", str(i)) for i in range(100, 200)]
    for msg in frames:
        sender.protocol.send_binary(msg.encode())
    await sender._flush()
    for k, member in enumerate(members):
        got = []
        while len(got) < 200 + (k == 0):
            msg = await member.recv()
            if msg.event in ("n", "dm"):
                got.append(msg.payload)
        expected = [str(i).encode() for i in range(200)]
        if k == 0:
            expected.insert(100, b"dm")
        assert got == expected
    assert (await sender.recv_until("join_ack", "other")).room == "other"
    for client in (sender, *members):
        await client.close()
