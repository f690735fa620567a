"""Room locks, without sockets: a lock exists only while a task holds or waits for it.

(Rooms themselves are the hub's, created and removed synchronously: see
tests/test_hub.py.)
"""

from __future__ import annotations

import trio
import trio.testing

from trioroom.locks import RoomLocks


async def test_a_lock_exists_only_while_held() -> None:
    locks = RoomLocks()
    async with locks.hold("lobby"):
        assert len(locks) == 1
    assert len(locks) == 0


async def test_cancelled_while_holding_the_lock_leaves_nothing() -> None:
    locks = RoomLocks()
    with trio.CancelScope() as scope:
        async with locks.hold("lobby"):
            scope.cancel()
            await trio.sleep_forever()
    assert len(locks) == 0


async def test_cancelled_before_taking_the_lock_leaves_nothing() -> None:
    locks = RoomLocks()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with locks.hold("lobby"):
            raise AssertionError("not reached")  # pragma: no cover
    assert len(locks) == 0


async def test_changes_of_one_room_are_serialised_and_a_cancelled_waiter_leaves_nothing() -> None:
    locks = RoomLocks()
    order: list[str] = []

    async def change(name: str, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            async with locks.hold("lobby"):
                order.append(name)

    waiter = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        async with locks.hold("lobby"):
            nursery.start_soon(change, "second")
            nursery.start_soon(change, "cancelled", waiter)
            await trio.testing.wait_all_tasks_blocked()
            waiter.cancel()
            await trio.testing.wait_all_tasks_blocked()
            order.append("first")
            async with locks.hold("elsewhere"):  # another room is not blocked
                order.append("other room")
    assert order == ["first", "other room", "second"]
    assert len(locks) == 0
