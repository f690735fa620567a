"""Bare wsrooms server on trio with direct socket I/O: the ceiling of issue 15.

The same shape as ``bare_trio.py`` (the same ``_wsrooms.Hub``, the websockets
sans-I/O protocol, per connection a reader task and a writer task fed by a
bounded trio memory channel, a full queue disconnects the client), with three
changes to the I/O path:

* **Direct write.** The task that delivers a frame sends it itself with a
  non-blocking ``send`` on the plain socket when the connection's queue is
  empty and its writer is not waiting for the socket (``Conn.writing`` is
  False). Only what the kernel did not take goes to the writer task, which
  then owns the socket: it waits for writability and drains the queue, and no
  direct write happens until it has found the queue empty again.
* **Corking.** When one read produced more than one message, the frames of
  that read are gathered per recipient and each recipient gets one write at
  the end of the read. A read with one message writes each frame at once (in
  chat a read rarely holds two frames for the same recipient).
* **Reads.** One ``trio.lowlevel.wait_readable`` and a plain non-blocking
  ``recv``: one trip through the scheduler per readiness, where trio's
  ``receive_some`` makes two (the wait, then the checkpoint after ``recv``).

Sockets are plain ``socket.socket`` objects with a hand-written accept loop
(``TCP_NODELAY`` like trio's ``SocketStream``); every close goes through
``trio.lowlevel.notify_closing``. ``Conn.dead`` is set before the close and
checked before every direct write, and the socket object (never a cached fd
number, which another connection may get) is what is written to.

    python benchmarks/peers/bare_direct.py --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import errno
import os
import socket
import sys

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wsrooms import Hub, announce, parse_args

BINARY, TEXT = Opcode.BINARY, Opcode.TEXT
MAX_MESSAGE = 65536
RECV_SIZE = 65536
#: accept() calls per readiness of the listening socket, before yielding.
ACCEPT_BATCH = 64
#: accept() errors that mean "out of resources for now": wait and retry.
ACCEPT_BACKOFF = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class Conn:
    __slots__ = ("__weakref__", "cork", "dead", "queue", "scope", "sock", "writing")

    def __init__(
        self, sock: socket.socket, queue: trio.MemorySendChannel[bytes], scope: trio.CancelScope
    ) -> None:
        self.sock = sock
        self.queue = queue
        self.scope = scope
        self.dead = False
        # True while the writer task owns the socket: it has queued bytes or is
        # waiting for writability. Direct writes only while False.
        self.writing = False
        # Frames gathered for this connection during a corked batch.
        self.cork: list[bytes] | None = None


def kill(conn: Conn) -> None:
    """Slow or broken client: drop the connection, not the server."""
    conn.dead = True
    conn.scope.cancel()


def write(conn: Conn, data: bytes) -> None:
    """Send ``data`` to ``conn`` now if the socket is ours, else queue it."""
    if conn.dead:
        return
    if not conn.writing:
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            # EPIPE, ECONNRESET, ...: the connection is dead.
            kill(conn)
            return
        if n == len(data):
            return
        # The kernel took part (or none): the writer owns the rest, and the
        # socket, until it has drained the queue.
        data = data[n:]
        conn.writing = True
    try:
        conn.queue.send_nowait(data)
    except trio.WouldBlock:
        kill(conn)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        conn.dead = True


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Blocking-style send for the handshake (before the connection exists)."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view:
            await wait_writable(sock)


def close_socket(sock: socket.socket) -> None:
    if sock.fileno() == -1:
        return
    notify_closing(sock)
    sock.close()


class Server:
    def __init__(self, queue_size: int) -> None:
        self.hub = Hub()
        self.queue_size = queue_size

    @staticmethod
    def deliver(deliveries: list) -> None:
        """Each frame written at once (a batch of one message)."""
        for targets, message in deliveries:
            frame = Frame(BINARY, message).serialize(mask=False)
            for conn in targets:
                write(conn, frame)

    @staticmethod
    def cork(deliveries: list, corked: list[Conn]) -> None:
        """Gather frames per recipient; ``flush`` writes them."""
        for targets, message in deliveries:
            frame = Frame(BINARY, message).serialize(mask=False)
            for conn in targets:
                frames = conn.cork
                if frames is None:
                    conn.cork = [frame]
                    corked.append(conn)
                else:
                    frames.append(frame)

    @staticmethod
    def flush(corked: list[Conn]) -> None:
        for conn in corked:
            frames = conn.cork
            conn.cork = None
            if frames:
                write(conn, frames[0] if len(frames) == 1 else b"".join(frames))

    def deliver_batch(self, deliveries: list) -> None:
        """One emit/broadcast call as a batch: corked if it has several pairs."""
        if len(deliveries) <= 1:
            self.deliver(deliveries)
        else:
            corked: list[Conn] = []
            self.cork(deliveries, corked)
            self.flush(corked)

    async def serve(self, listener: socket.socket) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await wait_readable(listener)
                for _ in range(ACCEPT_BATCH):
                    try:
                        sock, _addr = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in ACCEPT_BACKOFF:
                            await trio.sleep(0.1)
                            break
                        if exc.errno == errno.ECONNABORTED:
                            continue
                        raise
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    nursery.start_soon(self.handler, sock)

    async def handler(self, sock: socket.socket) -> None:
        try:
            await self.connection(sock)
        finally:
            close_socket(sock)

    async def connection(self, sock: socket.socket) -> None:
        proto = ServerProtocol(max_size=MAX_MESSAGE)
        request = None
        with trio.move_on_after(10):
            while request is None:
                try:
                    await wait_readable(sock)
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    break
                proto.receive_data(data)
                for ev in proto.events_received():
                    if isinstance(ev, Request):
                        request = ev
                if request is None and proto.state is not State.CONNECTING:
                    break
        try:
            if request is None:
                pending = proto.data_to_send()
                if pending:
                    with trio.move_on_after(1):
                        await send_all(sock, b"".join(pending))
                return
            response = proto.accept(request)
            proto.send_response(response)
            with trio.move_on_after(10):
                await send_all(sock, b"".join(proto.data_to_send()))
            if response.status_code != 101:
                return
        except OSError:
            return

        send_q, recv_q = trio.open_memory_channel[bytes](self.queue_size)
        scope = trio.CancelScope()
        conn = Conn(sock, send_q, scope)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.writer, conn, recv_q)
                    _cid, deliveries = self.hub.connect(conn)
                    self.deliver_batch(deliveries)
                    await self.reader(conn, proto)
                    # Reader done: leave the rooms, then let the writer flush
                    # what is queued (the close frame included), for 2 s at most.
                    self.deliver_batch(self.hub.disconnect(conn))
                    send_q.close()
                    nursery.cancel_scope.deadline = trio.current_time() + 2
        finally:
            conn.dead = True
            self.deliver_batch(self.hub.disconnect(conn))
            send_q.close()

    async def reader(self, conn: Conn, proto: ServerProtocol) -> None:
        hub, deliver, cork, flush = self.hub, self.deliver, self.cork, self.flush
        sock = conn.sock
        while True:
            try:
                await wait_readable(sock)
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError):
                return
            if not data:
                proto.receive_eof()
                return
            proto.receive_data(data)
            messages = [
                ev.data
                for ev in proto.events_received()
                if (ev.opcode is BINARY or ev.opcode is TEXT) and ev.fin
            ]
            if len(messages) == 1:
                deliver(hub.handle(conn, messages[0]))
            elif messages:
                # One read, several messages: one write per recipient.
                corked: list[Conn] = []
                for message in messages:
                    cork(hub.handle(conn, message), corked)
                flush(corked)
            out = proto.data_to_send()
            if out:
                for chunk in out:
                    if not chunk:
                        return  # EOF: the closing handshake is done
                    write(conn, chunk)
                    if conn.dead:
                        return
            if proto.state is State.CLOSED or proto.state is State.CLOSING:
                return

    async def writer(self, conn: Conn, recv_q: trio.MemoryReceiveChannel[bytes]) -> None:
        sock = conn.sock
        try:
            while True:
                try:
                    first = recv_q.receive_nowait()
                except trio.WouldBlock:
                    # Queue drained: the socket is the delivering tasks' again.
                    conn.writing = False
                    first = await recv_q.receive()
                batch = [first]
                try:
                    while True:
                        batch.append(recv_q.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    pass
                view = memoryview(first if len(batch) == 1 else b"".join(batch))
                while view:
                    if conn.dead:
                        return
                    try:
                        n = sock.send(view)
                    except BlockingIOError:
                        n = 0
                    view = view[n:]
                    if view:
                        await wait_writable(sock)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        except OSError:
            kill(conn)


async def main() -> None:
    args = parse_args(__doc__)
    server = Server(args.queue)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    listener.setblocking(False)
    announce(args.host, listener.getsockname()[1], "bare_direct")
    try:
        await server.serve(listener)
    finally:
        close_socket(listener)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:  # SIGINT while the accept loop's nursery runs
        _interrupt, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
