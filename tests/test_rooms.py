"""Room registry rules, without sockets."""

from __future__ import annotations

import trio
import trio.testing

from trioroom.rooms import RoomRegistry


async def test_rooms_are_created_on_demand_and_removed_when_empty() -> None:
    registry: RoomRegistry[str] = RoomRegistry()
    async with registry.locked("lobby", create=True) as room:
        assert room is not None
        room.members["a"] = "A"
    assert registry.names() == ["lobby"]
    async with registry.locked("lobby", create=False) as room:
        assert room is not None
        del room.members["a"]
    assert registry.names() == []
    assert room.closed


async def test_lookup_without_create_yields_none_and_creates_nothing() -> None:
    registry: RoomRegistry[str] = RoomRegistry()
    async with registry.locked("nowhere", create=False) as room:
        assert room is None
    assert len(registry) == 0


async def test_block_that_adds_nobody_leaves_no_room() -> None:
    registry: RoomRegistry[str] = RoomRegistry()
    async with registry.locked("lobby", create=True):
        pass
    assert len(registry) == 0


async def test_cancelled_while_holding_the_lock_leaves_no_empty_room() -> None:
    registry: RoomRegistry[str] = RoomRegistry()
    with trio.CancelScope() as scope:
        async with registry.locked("lobby", create=True):
            scope.cancel()
            await trio.sleep_forever()
    assert len(registry) == 0


async def test_cancelled_while_waiting_for_a_new_room_lock_leaves_no_room() -> None:
    registry: RoomRegistry[str] = RoomRegistry()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with registry.locked("lobby", create=True):
            raise AssertionError("not reached")  # pragma: no cover
    assert len(registry) == 0


async def test_join_racing_removal_of_an_empty_room_gets_a_live_room() -> None:
    """A joiner that waited on the lock of a room being emptied must not join a dead room."""
    registry: RoomRegistry[str] = RoomRegistry()
    async with registry.locked("lobby", create=True) as room:
        assert room is not None
        room.members["a"] = "A"
    old = registry.get("lobby")
    joined = []

    async def joiner() -> None:
        async with registry.locked("lobby", create=True) as room:
            assert room is not None
            room.members["b"] = "B"
            joined.append(room)

    async with trio.open_nursery() as nursery:
        async with registry.locked("lobby", create=False) as room:
            assert room is old
            nursery.start_soon(joiner)
            await trio.testing.wait_all_tasks_blocked()
            del room.members["a"]  # the last member leaves while the joiner waits
    assert old is not None and old.closed
    (live,) = joined
    assert live is not old
    assert registry.get("lobby") is live
    assert "b" in live.members
