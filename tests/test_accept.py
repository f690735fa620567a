"""Accepting connections (trioroom.accept) and the handshake's answer on a plain socket.

Plain TCP listeners get trioroom's own accept loop; the 101 goes out in one
write with the ``root`` join_ack. Real sockets on 127.0.0.1, port 0.
"""

from __future__ import annotations

import sys

import trio
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from trioroom import Server
from trioroom.accept import ACCEPT_BATCH, serve_listeners
from trioroom.engines.native import StreamTransport
from trioroom.protocol import Message

from .serveproc import READY, Client, running
from .wire import RawClient


async def test_a_burst_of_connects_larger_than_one_accept_batch_is_served(
    nursery: trio.Nursery,
) -> None:
    server = Server(max_connections_per_address=1000, max_handshakes_per_address=1000)
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    # Connected (in the kernel's queue) before any of them is accepted.
    count = ACCEPT_BATCH * 2 + 5
    streams = [await trio.open_tcp_stream(host, port) for _ in range(count)]
    with trio.fail_after(30):
        clients = [await RawClient.connect(stream) for stream in streams]
    assert len({client.id for client in clients}) == count
    assert server.metrics.connections_opened == count
    for client in clients:
        await client.close()


async def test_accepting_ends_when_the_owner_closes_the_listener() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    host, port = listeners[0].socket.getsockname()[:2]
    served: list[trio.SocketStream] = []
    first = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        served.append(stream)
        first.set()
        await stream.aclose()

    async with trio.open_nursery() as handlers:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_listeners, listeners, handler, handlers)
                stream = await trio.open_tcp_stream(host, port)
                await first.wait()
                await stream.aclose()
                for listener in listeners:
                    await listener.aclose()
            # serve_listeners returned by itself: the nursery closed.
    assert len(served) == 1
    # The descriptor was the listener's: closed once, and not accepting.
    assert listeners[0].socket.fileno() == -1
    with trio.fail_after(10):
        try:
            await trio.open_tcp_stream(host, port)
        except OSError:
            pass
        else:
            raise AssertionError("the port still accepts after its listener closed")


async def test_the_answer_and_the_root_join_ack_arrive_in_one_write(
    nursery: trio.Nursery,
) -> None:
    server = Server()
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    stream = await trio.open_tcp_stream(host, port)
    client = await RawClient.connect(stream, read_root_ack=False)
    # RawClient keeps the frames that came in the read that held the 101.
    frames = [frame for frame in client.frames if frame.opcode is Opcode.BINARY]
    assert len(frames) == 1
    ack = Message.decode(frames[0].data)
    assert (ack.room, ack.event) == ("root", "join_ack")
    await client.close()


async def _transport_pair(preface: bytes) -> tuple[StreamTransport, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    protocol = ServerProtocol()
    protocol.state = State.OPEN  # as after the handshake (the preface is its answer)
    transport = StreamTransport(trio.SocketStream(a), protocol, preface=preface)
    return transport, trio.SocketStream(b)


async def _read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    with trio.fail_after(10):
        while len(data) < size:
            chunk = await stream.receive_some(size - len(data))
            assert chunk, "closed early"
            data += chunk
    return data


async def test_a_preface_goes_out_before_the_first_direct_write() -> None:
    transport, peer = await _transport_pair(b"ANSWER|")
    assert transport.send_now(b"frame")
    assert await _read_exactly(peer, 12) == b"ANSWER|frame"
    # Only once.
    assert transport.send_now(b"again")
    assert await _read_exactly(peer, 5) == b"again"


async def test_a_preface_goes_out_first_from_the_writer_and_before_a_close_frame() -> None:
    transport, peer = await _transport_pair(b"ANSWER|")
    await transport.write([b"queued"])
    assert await _read_exactly(peer, 13) == b"ANSWER|queued"

    transport, peer = await _transport_pair(b"ANSWER|")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.close, 1000, "", [b"last|"])
        data = await _read_exactly(peer, 12)
        assert data == b"ANSWER|last|"
        # Then the close frame (0x88).
        assert (await _read_exactly(peer, 1)) == b"\x88"
        # close() reads until the peer's close frame or EOF: EOF it is.
        await peer.send_eof()
    with trio.fail_after(10):
        while await peer.receive_some(100):
            pass


async def test_a_reader_that_waits_before_anything_was_written_wakes_the_writer() -> None:
    transport, peer = await _transport_pair(b"ANSWER|")
    woken: list[bool] = []
    transport.attach(lambda: woken.append(True))
    with trio.move_on_after(0.05):
        await transport.receive()
    # The writer, once woken, writes the preface (write([b""]) is a wake-up).
    assert woken
    await transport.write([b""])
    assert await _read_exactly(peer, 7) == b"ANSWER|"


async def test_out_of_descriptors_the_server_waits_and_serves_again() -> None:
    """A server out of file descriptors logs EMFILE, waits, and serves once some are free."""
    limit = 48
    script = (
        "import resource, runpy, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "sys.argv = ['trioroom', *sys.argv[1:]]\n"
        "runpy.run_module('trioroom', run_name='__main__')\n"
    )
    command = [
        sys.executable,
        "-c",
        script,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-connections-per-address",
        "1000",
        "--max-handshakes-per-address",
        "1000",
    ]
    async with running(command) as child:
        match = await child.stdout.wait_for(READY)
        address = (match.group(1).decode(), int(match.group(2)))
        # More connections than the server has descriptors for; none sends
        # a request, so each one the server accepted holds its descriptor.
        streams = [await trio.open_tcp_stream(*address) for _ in range(limit + 8)]
        await child.stderr.wait_for(b"accept returned EMFILE")
        for stream in streams:
            await stream.aclose()
        # Descriptors free again: the connections still queued are accepted
        # (and find their clients gone), and a new client is served.
        client = await Client.connect(address)
        assert client.id
        await client.close()
