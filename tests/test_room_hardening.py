"""Issue 14, items 6, 8 and 9: member lists, direct-message rooms, names."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from trioroom import Server
from trioroom.backplane import Backplane
from trioroom.protocol import Message

from .wire import RawClient, StartServer, memory_client

V1 = ["trioroom.v1"]


def members(msg: Message) -> list[str]:
    value = json.loads(msg.payload)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


async def extended(address: Any) -> RawClient:
    """A raw client that negotiated trioroom.v1, past its session and root join_ack."""
    raw = await RawClient.connect(address, subprotocols=V1, read_root_ack=False)
    ack = await raw.recv_until("join_ack", "root")
    raw.id = ack.src
    return raw


async def error_of(client: RawClient) -> dict[str, Any]:
    msg = await client.recv_until("trioroom.error")
    body = json.loads(msg.payload)
    assert isinstance(body, dict)
    return body


# -- item 6: member lists ----------------------------------------------------------


async def test_member_list_is_capped_in_every_room(start_server: StartServer) -> None:
    _, address = await start_server(root_notices=False, member_list_limit=3)
    clients = [await RawClient.connect(address) for _ in range(5)]
    for client in clients:
        await client.join("lobby")
    last = await RawClient.connect(address)
    ids = members(await last.join("lobby"))
    assert ids[0] == last.id
    assert len(ids) == 3
    # The oldest members, in join order, after the joiner.
    assert ids[1:] == [clients[0].id, clients[1].id]


async def test_root_member_list_keeps_its_own_cap(start_server: StartServer) -> None:
    _, address = await start_server(
        root_notices=False, root_member_list_limit=2, member_list_limit=50
    )
    first = await RawClient.connect(address)
    await RawClient.connect(address)
    last = await RawClient.connect(address, read_root_ack=False)
    ack = await last.recv()
    assert members(ack) == [ack.src, first.id]


async def test_repeated_join_answers_with_the_joiner_alone(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    clients = [await RawClient.connect(address) for _ in range(4)]
    for client in clients:
        await client.join("lobby")
    for client in clients:
        await client.sync()
        client.frames.clear()
    a = clients[0]
    again = await a.join("lobby")
    assert (again.room, again.event, again.src) == ("lobby", "join_ack", a.id)
    assert members(again) == [a.id]
    # Nothing changed: still a member, nobody told.
    assert await server.members("lobby") == [c.id for c in clients]
    for other in clients[1:]:
        await other.expect_nothing()


async def test_member_list_is_encoded_once_per_membership_change(nursery: trio.Nursery) -> None:
    server = Server(root_notices=False, member_list_limit=3, ping_interval=None)
    clients = [await memory_client(server, nursery) for _ in range(6)]
    for client in clients[:2]:
        await client.join("lobby")
    room = server.hub.room("lobby")
    assert room is not None
    # A join changed the membership: the next join encodes afresh.
    assert room.member_list is None
    ack = await clients[2].join("lobby")
    assert members(ack) == [clients[2].id, clients[0].id, clients[1].id]
    cached = room.member_list
    assert cached is not None
    # The list already holds as many IDs as it may: joins at its end leave it as is.
    ack = await clients[3].join("lobby")
    assert room.member_list is cached
    ack = await clients[4].join("lobby")
    assert room.member_list is cached
    assert members(ack) == [clients[4].id, clients[0].id, clients[1].id]
    # A repeated join neither uses nor changes it.
    await clients[0].join("lobby")
    assert room.member_list is cached
    # A leave does change it.
    await clients[0].leave("lobby")
    assert room.member_list is None
    ack = await clients[5].join("lobby")
    assert members(ack) == [clients[5].id, clients[1].id, clients[2].id]
    assert room.member_list is not cached
    assert room.member_list is not None


# -- item 8: a direct message's room --------------------------------------------------


async def test_direct_message_on_a_room_the_sender_is_not_in_is_refused(
    start_server: StartServer,
) -> None:
    async def no_admins(conn: Any, room: str) -> bool:
        return room != "admins"

    server, address = await start_server(Server(root_notices=False, authorize_join=no_admins))
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.send(Message("admins", "join"))
    await a.send(Message("admins", "whisper", b.id, "", b"psst"))
    await a.send(Message("", "whisper", b.id, "", b"psst"))
    await a.sync()
    await b.expect_nothing()
    assert server.metrics.frames_dropped["not_a_member"] == 2
    # root, and rooms the sender is in, still carry direct messages.
    await a.send(Message("root", "whisper", b.id, "", b"1"))
    assert await b.recv() == Message("root", "whisper", b.id, a.id, b"1")
    await a.join("lobby")
    await a.send(Message("lobby", "whisper", b.id, "", b"2"))
    assert await b.recv() == Message("lobby", "whisper", b.id, a.id, b"2")


async def test_refused_direct_message_tells_an_extended_sender(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await extended(address)
    b = await RawClient.connect(address)
    await a.send(Message("admins", "whisper", b.id, "?7", b"psst"))
    error = await a.recv_until("trioroom.error")
    assert error.dst == "?7"
    body = json.loads(error.payload)
    assert (body["code"], body["event"]) == ("not_a_member", "whisper")
    await b.expect_nothing()
    assert server.metrics.frames_dropped["not_a_member"] == 1


# -- item 9: names -----------------------------------------------------------------------

BAD_NAMES = ["lob\x00by", "lobby\n", "\x1b[31mred", "del\x7f", "c1\x85", "line\u2028sep"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_join_of_a_room_name_with_control_characters_is_refused(
    start_server: StartServer, name: str
) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    await a.send(Message(name, "join"))
    await a.expect_nothing()
    assert server.metrics.frames_dropped["join_refused"] == 1
    assert await server.rooms() == ["root"]
    assert a.id in await server.members("root")


async def test_refused_name_tells_an_extended_client(start_server: StartServer) -> None:
    server, address = await start_server(root_notices=False)
    a = await extended(address)
    await a.send(Message("lob\x00by", "join", "", "?1"))
    body = await error_of(a)
    assert body["code"] == "join_refused"
    await a.send(Message("root", "ch\x00at", "", "?2", b"x"))
    body = await error_of(a)
    assert body["code"] == "malformed"
    assert await server.rooms() == ["root"]


async def test_frames_with_control_characters_in_room_or_event_are_dropped(
    start_server: StartServer,
) -> None:
    server, address = await start_server(root_notices=False)
    a = await RawClient.connect(address)
    b = await RawClient.connect(address)
    await a.join("lobby")
    await b.join("lobby")
    await a.recv_until("new_member")
    await b.send(Message("lobby", "ch\x00at", "", "", b"x"))
    await b.send(Message("lobby", "chat\r\nforged", "", "", b"x"))
    await b.send(Message("lobby\x00", "chat", "", "", b"x"))
    await b.send(Message("root\u2029", "whisper", a.id, "", b"x"))
    await b.send(Message("root", "whis\x1fper", a.id, "", b"x"))
    await b.sync()
    await a.expect_nothing()
    assert server.metrics.frames_dropped["malformed"] == 5
    # Printable names outside ASCII are fine.
    await b.send(Message("lobby", "chat·é", "", "", b"ok"))
    assert await a.recv() == Message("lobby", "chat·é", "", b.id, b"ok")


class RecordingBackplane(Backplane):
    """A backplane that only records the room names the server hands it."""

    distributed = True

    def __init__(self) -> None:
        self.names: list[str] = []

    async def joined(self, room: str, conn_id: str) -> None:
        self.names.append(room)

    async def left(self, room: str, conn_id: str) -> None:
        self.names.append(room)

    async def remote_members(self, room: str, *, limit: int | None = None) -> list[str]:
        await trio.lowlevel.checkpoint()
        self.names.append(room)
        return []

    def publish_room(self, room: str, message: bytes, exclude: str) -> None:
        self.names.append(room)


async def test_names_with_control_characters_never_reach_the_backplane(
    nursery: trio.Nursery,
) -> None:
    backplane = RecordingBackplane()
    server = Server(backplane=backplane, root_notices=False, ping_interval=None)
    a = await memory_client(server, nursery)
    await a.join("lobby")
    await a.send(Message("ghost\x00room", "join"))
    await a.send(Message("lobby\x00", "chat", "", "", b"x"))
    await a.send(Message("lobby", "leave\x00", "", "", b"x"))
    await a.leave("lobby")
    await a.sync()
    assert backplane.names and all(name in ("root", "lobby") for name in backplane.names)
    assert server.metrics.frames_dropped["join_refused"] == 1
