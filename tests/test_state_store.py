"""Tests of the SQLite StateStore: device twins and the dead-letter table."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.core.messages import classify
from daemon.core.twin import DeviceTwin, Twins
from daemon.ports import DeadLetter

T = TypeVar("T")
T0 = 1_700_000_000_000


def with_state(path: Path, body: Callable[[SqliteStateStore], Awaitable[T]]) -> T:
    """Open the state store at `path`, run `body` in a fresh event loop, close it."""

    async def main() -> T:
        store = SqliteStateStore(path)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def sample_twins() -> list[DeviceTwin]:
    twins = Twins()
    twins.apply(classify("devices/b1/telemetry", b'{"temp": 21.5, "mode": "eco"}', T0), T0)
    twins.apply(classify("devices/b1/meta", b'{"model": "m", "labels": {"x": 1}}', T0), T0 + 1)
    twins.apply(classify("devices/a2/status", b"offline", T0), T0 + 2, retained=True)
    return twins.take_dirty()


def test_twins_round_trip(tmp_path: Path) -> None:
    """Test that saved twins load back equal, across close and reopen, ordered by device."""
    twins = sample_twins()

    async def save(store: SqliteStateStore) -> None:
        await store.save_twins([twin.to_dict() for twin in twins])

    async def load(store: SqliteStateStore) -> list[dict[str, Any]]:
        return await store.load_twins()

    with_state(tmp_path / "state.db", save)
    loaded = [DeviceTwin.from_dict(data) for data in with_state(tmp_path / "state.db", load)]
    assert loaded == sorted(twins, key=lambda twin: twin.id)
    assert [twin.id for twin in loaded] == ["a2", "b1"]


def test_twins_upsert(tmp_path: Path) -> None:
    """Test that saving a twin again replaces it instead of adding a second row."""

    async def body(store: SqliteStateStore) -> list[dict[str, Any]]:
        twin = DeviceTwin("d1", T0, metrics={"temp": (T0, 1.0)})
        await store.save_twins([twin.to_dict(), DeviceTwin("d2", T0).to_dict()])
        twin.metrics["temp"] = (T0 + 5, 2.0)
        twin.status = "online"
        await store.save_twins([twin.to_dict()])
        await store.save_twins([])
        return await store.load_twins()

    loaded = with_state(tmp_path / "state.db", body)
    assert [data["id"] for data in loaded] == ["d1", "d2"]
    d1 = DeviceTwin.from_dict(loaded[0])
    assert (d1.metrics, d1.status) == ({"temp": (T0 + 5, 2.0)}, "online")


def test_empty_state(tmp_path: Path) -> None:
    """Test that a new state store has no twins and no dead letters."""

    async def body(store: SqliteStateStore) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
        return await store.load_twins(), await store.dead_letters()

    assert with_state(tmp_path / "state.db", body) == ([], [])


def letter(received_ms: int, payload: bytes, device: str | None = "d1") -> DeadLetter:
    return DeadLetter(
        received_ms, f"devices/{device}/telemetry", device, "not_json", "bad", payload, len(payload)
    )


def test_dead_letters_newest_first_with_raw_bytes(tmp_path: Path) -> None:
    """Test that dead letters list newest first, keep raw (non-UTF-8) bytes and every field."""
    letters = [
        letter(T0, b"\xff\xfe\x00binary"),
        letter(T0 + 1, b"{not json", device=None),
        letter(T0 + 2, b""),
    ]

    async def body(store: SqliteStateStore) -> tuple[list[DeadLetter], list[DeadLetter]]:
        await store.add_dead_letters(letters[:2])
        await store.add_dead_letters(letters[2:])
        await store.add_dead_letters([])
        return await store.dead_letters(), await store.dead_letters(limit=2)

    everything, newest_two = with_state(tmp_path / "state.db", body)
    assert everything == letters[::-1]
    assert newest_two == letters[:0:-1]
    assert isinstance(everything[-1].payload, bytes)


def test_dead_letters_keep_insertion_order_not_receive_time(tmp_path: Path) -> None:
    """Test that 'newest' means most recently added, even if receive times are out of order."""

    async def body(store: SqliteStateStore) -> list[int]:
        await store.add_dead_letters([letter(T0 + 50, b"a")])
        await store.add_dead_letters([letter(T0 + 10, b"b")])
        return [x.received_ms for x in await store.dead_letters()]

    assert with_state(tmp_path / "state.db", body) == [T0 + 10, T0 + 50]


def test_delete_dead_letters_before(tmp_path: Path) -> None:
    """Test that only letters received strictly before the cut-off are deleted, and counted."""

    async def body(store: SqliteStateStore) -> tuple[int, int, list[int]]:
        await store.add_dead_letters([letter(T0 + i, b"x") for i in range(5)])
        deleted = await store.delete_dead_letters_before(T0 + 3)
        again = await store.delete_dead_letters_before(T0 + 3)
        return deleted, again, [x.received_ms for x in await store.dead_letters()]

    assert with_state(tmp_path / "state.db", body) == (3, 0, [T0 + 4, T0 + 3])
