"""Bare wsrooms broadcast server on trio + the websockets sans-I/O protocol.

The ceiling of trioroom's stack: no features beyond the wsrooms semantics
(see ``_wsrooms.Hub``), no metrics, no auth, no pings. Per connection: a reader
task feeding ``websockets.server.ServerProtocol``, and a writer task fed by a
bounded trio memory channel that sends everything queued at that moment in one
``send_all``. A broadcast is encoded once (message and WebSocket frame) and the
same bytes object is put in every recipient's queue. A full queue disconnects
that client (like wsrooms' 256-message queue).

    python benchmarks/peers/bare_trio.py --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import os
import sys

import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _wsrooms import Hub, announce, parse_args

BINARY, TEXT = Opcode.BINARY, Opcode.TEXT
MAX_MESSAGE = 65536


class Conn:
    __slots__ = ("__weakref__", "dead", "queue", "scope")

    def __init__(self, queue: trio.MemorySendChannel[bytes], scope: trio.CancelScope) -> None:
        self.queue = queue
        self.scope = scope
        self.dead = False


class Server:
    def __init__(self, queue_size: int) -> None:
        self.hub = Hub()
        self.queue_size = queue_size

    def deliver(self, deliveries: list) -> None:
        for targets, message in deliveries:
            frame = Frame(BINARY, message).serialize(mask=False)
            for conn in targets:
                if conn.dead:
                    continue
                try:
                    conn.queue.send_nowait(frame)
                except trio.WouldBlock:
                    # Slow consumer: drop the connection, not the server.
                    conn.dead = True
                    conn.scope.cancel()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    conn.dead = True

    async def handler(self, stream: trio.SocketStream) -> None:
        proto = ServerProtocol(max_size=MAX_MESSAGE)
        request = None
        with trio.move_on_after(10):
            while request is None:
                data = await stream.receive_some(65536)
                if not data:
                    break
                proto.receive_data(data)
                for ev in proto.events_received():
                    if isinstance(ev, Request):
                        request = ev
                if request is None and proto.state is not State.CONNECTING:
                    break
        if request is None:
            pending = proto.data_to_send()
            if pending:
                await stream.send_all(b"".join(pending))
            await stream.aclose()
            return
        response = proto.accept(request)
        proto.send_response(response)
        await stream.send_all(b"".join(proto.data_to_send()))
        if response.status_code != 101:
            await stream.aclose()
            return

        send_q, recv_q = trio.open_memory_channel[bytes](self.queue_size)
        scope = trio.CancelScope()
        conn = Conn(send_q, scope)
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.writer, stream, recv_q)
                    _cid, deliveries = self.hub.connect(conn)
                    self.deliver(deliveries)
                    await self.reader(stream, proto, conn)
                    # Reader done: leave the rooms, then let the writer flush
                    # what is queued (the close frame included), for 2 s at most.
                    conn.dead = True
                    self.deliver(self.hub.disconnect(conn))
                    send_q.close()
                    nursery.cancel_scope.deadline = trio.current_time() + 2
        finally:
            conn.dead = True
            self.deliver(self.hub.disconnect(conn))
            send_q.close()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def reader(self, stream: trio.SocketStream, proto: ServerProtocol, conn: Conn) -> None:
        hub, deliver = self.hub, self.deliver
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                proto.receive_eof()
                return
            proto.receive_data(data)
            for ev in proto.events_received():
                op = ev.opcode
                if op is BINARY or op is TEXT:
                    if ev.fin:
                        deliver(hub.handle(conn, ev.data))
            out = proto.data_to_send()
            if out:
                for chunk in out:
                    if chunk:
                        try:
                            conn.queue.send_nowait(chunk)
                        except (
                            trio.WouldBlock,
                            trio.BrokenResourceError,
                            trio.ClosedResourceError,
                        ):
                            return
                    else:
                        return  # EOF: the closing handshake is done
            if proto.state is State.CLOSED or proto.state is State.CLOSING:
                return

    async def writer(
        self, stream: trio.SocketStream, recv_q: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        try:
            async for first in recv_q:
                batch = [first]
                try:
                    while True:
                        batch.append(recv_q.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    pass
                await stream.send_all(first if len(batch) == 1 else b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def main() -> None:
    args = parse_args(__doc__)
    server = Server(args.queue)
    listeners = await trio.open_tcp_listeners(args.port, host=args.host, backlog=4096)
    port = listeners[0].socket.getsockname()[1]
    announce(args.host, port, "bare_trio")
    await trio.serve_listeners(server.handler, listeners)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
