"""The Python client against a hostile or broken server.

The server here is scripted: a real socket on 127.0.0.1 (port 0) speaking
WebSocket with websockets' sans-I/O ``ServerProtocol``, so a test can send
exactly the frames a broken server would (or nothing at all).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

import trioroom
from trioroom import Message
from trioroom.client import ConnectionClosed, RequestFailed, ServerError
from trioroom.extension import ERROR, REPLY, SESSION, SUBPROTOCOL

from .wire import WAIT, wait_until

#: A JSON array nested deeper than any recursion limit: ``[[[...]]]``.
NESTED = b"[" * 100_000 + b"]" * 100_000
SESSION_BODY = b'{"token":"t","resume_window":30}'


class Peer:
    """The server side of one scripted connection."""

    def __init__(self, stream: trio.SocketStream, protocol: ServerProtocol) -> None:
        self.stream = stream
        self.protocol = protocol

    async def accept(self) -> None:
        """Read the upgrade request and answer 101 (selecting a subprotocol if configured)."""
        request: Request | None = None
        while request is None:
            data = await self.stream.receive_some(65536)
            assert data, "the client closed during the handshake"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                assert isinstance(event, Request)
                request = event
        self.protocol.send_response(self.protocol.accept(request))
        await self._flush()

    async def send(self, *messages: Message) -> None:
        for msg in messages:
            self.protocol.send_binary(msg.encode())
        await self._flush()

    async def recv(self) -> Message:
        """The next data frame from the client (acknowledgements included)."""
        while True:
            for event in self.protocol.events_received():
                if event.opcode is Opcode.BINARY:  # type: ignore[union-attr]
                    return Message.decode(event.data)  # type: ignore[union-attr]
            data = await self.stream.receive_some(65536)
            assert data, "the client closed the connection"
            self.protocol.receive_data(data)
            await self._flush()

    async def recv_until(self, event: str) -> Message:
        while True:
            msg = await self.recv()
            if msg.event == event:
                return msg

    async def hold(self) -> None:
        """Answer pings and the closing handshake until the client goes away."""
        while not self.protocol.close_expected():
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            self.protocol.receive_data(data)
            self.protocol.events_received()
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            await self.stream.send_all(data)


Script = Callable[[Peer], Awaitable[None]]


async def serve_script(
    nursery: trio.Nursery, script: Script, *, subprotocol: str | None = None
) -> str:
    """Serve every connection with ``script``; returns the ``ws://`` URL."""

    async def handle(stream: trio.SocketStream) -> None:
        subprotocols = [Subprotocol(subprotocol)] if subprotocol else None
        peer = Peer(stream, ServerProtocol(subprotocols=subprotocols, max_size=None))
        await script(peer)
        await peer.hold()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/ws"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- deeply nested JSON -----------------------------------------------------------


@pytest.mark.parametrize("room", ["root", "lobby"])
async def test_deeply_nested_member_list_is_a_bad_list_not_a_crash(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, room: str
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        members = NESTED if room == "root" else b'["me"]'
        await peer.send(Message("root", "join_ack", "", "me", members))
        if room != "root":
            await peer.recv_until("join")
            await peer.send(Message(room, "join_ack", "", "me", NESTED))
        await peer.send(Message(room, "new_member", "", "", b"other"), Message("root", "done"))

    url = await serve_script(nursery, script)
    with caplog.at_level(logging.WARNING, logger="trioroom.client"), trio.fail_after(WAIT):
        async with trioroom.connect(url) as client:
            joined = client if room == "root" else await client.join(room)
            assert (await client.receive()).event == "done"
            # The bad list counts as "only me"; later notices still apply.
            assert joined.members() == ["me", "other"]
    assert any(
        f"join_ack of {room!r} has a bad member list" in text and "nested too deeply" in text
        for text in _warnings(caplog)
    ), _warnings(caplog)


async def test_deeply_nested_session_frame_means_no_resumption_not_a_crash(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(
            Message("root", SESSION, "", "", NESTED),
            Message("root", "join_ack", "", "me", '["me"]'),
        )

    url = await serve_script(nursery, script, subprotocol=SUBPROTOCOL)
    with caplog.at_level(logging.WARNING, logger="trioroom.client"), trio.fail_after(WAIT):
        async with trioroom.connect(url, extension=True) as client:
            assert client.extended
            assert client.id == "me"
    assert any("without a usable token" in text for text in _warnings(caplog)), _warnings(caplog)


async def test_deeply_nested_error_frame_reaches_on_error_as_unknown(
    nursery: trio.Nursery,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(
            Message("root", SESSION, "", "", SESSION_BODY),
            Message("root", "join_ack", "", "me", '["me"]'),
            Message("root", ERROR, "", "", NESTED),
        )

    url = await serve_script(nursery, script, subprotocol=SUBPROTOCOL)
    errors: list[ServerError] = []
    with trio.fail_after(WAIT):
        async with trioroom.connect(url, extension=True) as client:

            @client.on_error
            async def on_error(error: ServerError) -> None:
                errors.append(error)

            await wait_until(lambda: bool(errors))
    assert [error.code for error in errors] == ["unknown"]
    # The unparsable payload is 200,000 bytes: its message shows the start only.
    assert errors[0].message.startswith("[[[") and len(errors[0].message) < 300


async def test_deeply_nested_answer_to_a_request_fails_it_as_unknown(
    nursery: trio.Nursery,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(
            Message("root", SESSION, "", "", SESSION_BODY),
            Message("root", "join_ack", "", "me", '["me"]'),
        )
        first = await peer.recv_until("first")
        await peer.send(Message("root", ERROR, first.src, "", NESTED))
        second = await peer.recv_until("second")
        await peer.send(Message("root", REPLY, second.src, "", NESTED))

    url = await serve_script(nursery, script, subprotocol=SUBPROTOCOL)
    with trio.fail_after(WAIT):
        async with trioroom.connect(url, extension=True) as client:
            with pytest.raises(RequestFailed) as failed:
                await client.request("first")
            assert failed.value.code == "unknown"
            # A reply's payload is the application's: returned as it came.
            assert await client.request("second") == NESTED


# -- handshake_timeout on the first connect ---------------------------------------


async def _no_101(peer: Peer) -> None:
    await trio.sleep_forever()  # TCP accepted; the upgrade is never answered


async def _no_join_ack(peer: Peer) -> None:
    await peer.accept()
    await trio.sleep_forever()


async def _only_other_frames(peer: Peer) -> None:
    await peer.accept()
    while True:  # keeps the socket busy, but never opens the session
        await peer.send(Message("root", "chat", "", "x", b"hi"))
        await trio.sleep(0.05)


@pytest.mark.parametrize("script", [_no_101, _no_join_ack, _only_other_frames])
async def test_first_connect_is_bounded_by_handshake_timeout(
    nursery: trio.Nursery, script: Script
) -> None:
    url = await serve_script(nursery, script)
    timeout = 0.5
    # Generous: only a client that never gives up reaches 10x the timeout.
    with trio.fail_after(10 * timeout), pytest.raises(ConnectionClosed) as closed:
        async with trioroom.connect(url, handshake_timeout=timeout):
            pass  # pragma: no cover
    assert closed.value.code == 1006
    assert "no answer within 0.5s" in closed.value.reason
    assert "handshake_timeout" in closed.value.reason


# -- membership notices -----------------------------------------------------------


async def test_many_member_notices_keep_order_and_never_duplicate(nursery: trio.Nursery) -> None:
    count = 20_000
    others = [f"m{i}" for i in range(count)]

    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(Message("root", "join_ack", "", "me", '["me","a","a"]'))
        notices = [Message("root", "new_member", "", "", m) for m in others]
        notices += [Message("root", "new_member", "", "", m) for m in ("m5", "me", "a")]
        notices += [Message("root", "member_left", "", "", m) for m in others[::2]]
        notices += [Message("root", "member_left", "", "", m) for m in ("ghost", "m0", "m1")]
        notices.append(Message("root", "new_member", "", "", "m1"))  # back: now the last
        await peer.send(*notices, Message("root", "done"))

    url = await serve_script(nursery, script)
    with trio.fail_after(WAIT):
        async with trioroom.connect(url) as client:
            assert (await client.receive()).event == "done"
            expected = ["me", "a", *(m for m in others[1::2] if m != "m1"), "m1"]
            assert client.members() == expected
            assert await client.wait_members(lambda ids: ids[-1] == "m1") == expected
