"""The SeriesStore contract, run against every adapter (add one line to STORES for a new one)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.errors import StoreUnavailable
from daemon.ports import Point, SeriesStore

T = TypeVar("T")
Rows = list[tuple[int, float]]
T0 = 1_700_000_000_000
#: A factory makes an unopened store whose data lives under the given directory; calling it twice
#: with the same directory must reach the same data (for the close/reopen test).
StoreFactory = Callable[[Path], SeriesStore]

STORES = [
    pytest.param(lambda directory: SqliteSeriesStore(directory / "series.db"), id="sqlite"),
    # pytest.param(lambda directory: InfluxSeriesStore(...), id="influxdb", marks=integration),
]


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SeriesStore]:
    """Return a function that makes a fresh, unopened store of one adapter on shared data."""
    factory: StoreFactory = request.param
    return lambda: factory(tmp_path)


def with_store(make: Callable[[], SeriesStore], body: Callable[[SeriesStore], Awaitable[T]]) -> T:
    """Open a store, run `body` on it in a fresh event loop, close the store, return the result."""

    async def main() -> T:
        store = make()
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def series(device: str, metric: str, values: list[tuple[int, float]]) -> list[Point]:
    return [Point(device, metric, T0 + ts, value) for ts, value in values]


def test_write_then_query_range_in_order(make_store: Callable[[], SeriesStore]) -> None:
    """Test that points come back in time order whatever the write order."""

    async def body(store: SeriesStore) -> list[tuple[int, float]]:
        await store.write(series("d1", "temp", [(30, 3.0), (10, 1.0), (20, 2.0)]))
        await store.write(series("d1", "temp", [(5, 0.5)]))
        return await store.query_range("d1", "temp", T0, T0 + 100)

    assert with_store(make_store, body) == [
        (T0 + 5, 0.5),
        (T0 + 10, 1.0),
        (T0 + 20, 2.0),
        (T0 + 30, 3.0),
    ]


RANGES = [
    pytest.param(10, 30, [10, 20, 30], id="inclusive-both-ends"),
    pytest.param(11, 29, [20], id="inside"),
    pytest.param(20, 20, [20], id="single-instant"),
    pytest.param(0, 9, [], id="before"),
    pytest.param(31, 99, [], id="after"),
    pytest.param(30, 10, [], id="reversed"),
]


@pytest.mark.parametrize(("start", "end", "expected"), RANGES)
def test_query_range_bounds(
    make_store: Callable[[], SeriesStore], start: int, end: int, expected: list[int]
) -> None:
    """Test that query_range includes both bounds and nothing outside them."""

    async def body(store: SeriesStore) -> list[tuple[int, float]]:
        await store.write(series("d1", "temp", [(10, 1.0), (20, 2.0), (30, 3.0)]))
        return await store.query_range("d1", "temp", T0 + start, T0 + end)

    assert [ts - T0 for ts, _ in with_store(make_store, body)] == expected


@pytest.mark.parametrize(("limit", "expected"), [(None, 5), (0, 0), (1, 1), (3, 3), (10, 5)])
def test_query_range_limit(
    make_store: Callable[[], SeriesStore], limit: int | None, expected: int
) -> None:
    """Test that `limit` returns at most that many of the oldest points in range."""

    async def body(store: SeriesStore) -> list[tuple[int, float]]:
        await store.write(series("d1", "temp", [(i, float(i)) for i in range(5)]))
        return await store.query_range("d1", "temp", T0, T0 + 10, limit)

    assert with_store(make_store, body) == [(T0 + i, float(i)) for i in range(expected)]


def test_query_last(make_store: Callable[[], SeriesStore]) -> None:
    """Test that query_last gives the newest point by time, None for an unknown series."""

    async def body(store: SeriesStore) -> list[tuple[int, float] | None]:
        await store.write(series("d1", "temp", [(20, 2.0), (30, 3.0), (10, 1.0)]))
        await store.write(series("d1", "pressure", [(99, 9.0)]))
        return [
            await store.query_last("d1", "temp"),
            await store.query_last("d1", "nope"),
            await store.query_last("d2", "temp"),
        ]

    assert with_store(make_store, body) == [(T0 + 30, 3.0), None, None]


def test_metrics_of_device(make_store: Callable[[], SeriesStore]) -> None:
    """Test that metrics(device) lists that device's metric names, sorted, and no others."""

    async def body(store: SeriesStore) -> list[list[str]]:
        await store.write(
            series("d1", "temp", [(1, 1.0)])
            + series("d1", "alpha", [(1, 1.0)])
            + series("d2", "zeta", [(1, 1.0)])
        )
        return [await store.metrics("d1"), await store.metrics("d2"), await store.metrics("d3")]

    assert with_store(make_store, body) == [["alpha", "temp"], ["zeta"], []]


def test_rewrite_keeps_one_point_with_last_value(make_store: Callable[[], SeriesStore]) -> None:
    """Test that writing the same (device, metric, ts) again keeps one point: the last value."""

    async def body(store: SeriesStore) -> list[tuple[int, float]]:
        batch = series("d1", "temp", [(10, 1.0), (20, 2.0)])
        await store.write(batch)
        await store.write(batch)  # a QoS 1 redelivery
        await store.write(series("d1", "temp", [(20, 7.0)]))
        await store.write(series("d1", "temp", [(30, 3.0), (30, 4.0)]))  # twice in one batch
        return await store.query_range("d1", "temp", T0, T0 + 100)

    assert with_store(make_store, body) == [(T0 + 10, 1.0), (T0 + 20, 7.0), (T0 + 30, 4.0)]


def test_many_devices_and_series_in_one_batch(make_store: Callable[[], SeriesStore]) -> None:
    """Test that one batch over many series stores each series separately and completely."""
    devices = [f"dev-{i:03d}" for i in range(50)]
    metric_names = ["temp", "pressure", "power"]
    points = [
        Point(device, metric, T0 + ts, float(i * 1000 + m * 100 + ts))
        for i, device in enumerate(devices)
        for m, metric in enumerate(metric_names)
        for ts in range(4)
    ]

    async def body(store: SeriesStore) -> dict[tuple[str, str], list[tuple[int, float]]]:
        await store.write(points)
        return {
            (device, metric): await store.query_range(device, metric, T0, T0 + 10)
            for device in devices
            for metric in metric_names
        }

    stored = with_store(make_store, body)
    for i, device in enumerate(devices):
        for m, metric in enumerate(metric_names):
            assert stored[(device, metric)] == [
                (T0 + ts, float(i * 1000 + m * 100 + ts)) for ts in range(4)
            ]


def test_delete_before(make_store: Callable[[], SeriesStore]) -> None:
    """Test that delete_before removes points strictly older than the cut-off and counts them."""

    async def body(store: SeriesStore) -> tuple[int, Rows, Rows, int]:
        await store.write(series("d1", "temp", [(10, 1.0), (20, 2.0), (30, 3.0)]))
        await store.write(series("d2", "temp", [(5, 5.0), (25, 2.5)]))
        deleted = await store.delete_before(T0 + 20)
        again = await store.delete_before(T0 + 20)
        return (
            deleted,
            await store.query_range("d1", "temp", 0, T0 + 100),
            await store.query_range("d2", "temp", 0, T0 + 100),
            again,
        )

    deleted, d1, d2, again = with_store(make_store, body)
    assert deleted == 2
    assert d1 == [(T0 + 20, 2.0), (T0 + 30, 3.0)]
    assert d2 == [(T0 + 25, 2.5)]
    assert again == 0


def test_empty_write_is_a_no_op(make_store: Callable[[], SeriesStore]) -> None:
    """Test that writing no points changes nothing and does not fail."""

    async def body(store: SeriesStore) -> tuple[list[str], list[tuple[int, float]]]:
        await store.write(series("d1", "temp", [(1, 1.0)]))
        await store.write([])
        return await store.metrics("d1"), await store.query_range("d1", "temp", 0, T0 + 10)

    assert with_store(make_store, body) == (["temp"], [(T0 + 1, 1.0)])


def test_data_survives_close_and_reopen(make_store: Callable[[], SeriesStore]) -> None:
    """Test that written points are durable across close and a new store on the same data."""

    async def first(store: SeriesStore) -> None:
        await store.write(series("d1", "temp", [(1, 1.0), (2, 2.0)]))

    async def second(store: SeriesStore) -> tuple[list[tuple[int, float]], list[str]]:
        await store.write(series("d1", "temp", [(3, 3.0)]) + series("d1", "new", [(3, 9.0)]))
        return await store.query_range("d1", "temp", 0, T0 + 10), await store.metrics("d1")

    with_store(make_store, first)
    points, names = with_store(make_store, second)
    assert points == [(T0 + 1, 1.0), (T0 + 2, 2.0), (T0 + 3, 3.0)]
    assert names == ["new", "temp"]


DEVICE_IDS = [
    pytest.param("Boiler_17.a:b-C", id="every-punctuation"),
    pytest.param("d" * 128, id="128-chars"),
    pytest.param("0", id="one-char"),
    pytest.param("caf\u00e9-\u6e29\u5ea6-\U0001f525", id="unicode"),
]


@pytest.mark.parametrize("device", DEVICE_IDS)
def test_device_ids_are_stored_verbatim(make_store: Callable[[], SeriesStore], device: str) -> None:
    """Test that device ids (every allowed character, full length, and unicode) round-trip."""

    async def body(store: SeriesStore) -> tuple[list[tuple[int, float]], list[str]]:
        await store.write(series(device, "temp", [(1, 1.5)]) + series("other", "temp", [(1, 9.0)]))
        return await store.query_range(device, "temp", 0, T0 + 10), await store.metrics(device)

    assert with_store(make_store, body) == ([(T0 + 1, 1.5)], ["temp"])


# -0.0 is left out: SQLite stores it as 0.0, which no rule can tell apart.
VALUES = [0.0, -1.5, 1e-300, 1.7976931348623157e308, 2.0**53 + 2, 123456.789]


def test_values_are_exact(make_store: Callable[[], SeriesStore]) -> None:
    """Test that float values come back bit-for-bit (extremes included)."""

    async def body(store: SeriesStore) -> list[tuple[int, float]]:
        await store.write([Point("d1", "v", T0 + i, v) for i, v in enumerate(VALUES)])
        return await store.query_range("d1", "v", T0, T0 + 100)

    assert [repr(v) for _, v in with_store(make_store, body)] == [repr(v) for v in VALUES]


def test_ping_and_closed_store(make_store: Callable[[], SeriesStore]) -> None:
    """Test that ping succeeds when open and a closed store raises StoreUnavailable."""

    async def main() -> None:
        store = make_store()
        await store.open()
        await store.ping()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.write(series("d1", "temp", [(1, 1.0)]))
        with pytest.raises(StoreUnavailable):
            await store.ping()

    asyncio.run(main())
