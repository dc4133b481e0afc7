"""SeriesStore on embedded SQLite: zero set-up, WAL, one transaction per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from daemon.adapters.sqlite_db import SqliteDb
from daemon.ports import Point

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (device, metric)
);
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_ts ON points (ts);
"""


class SqliteSeriesStore:
    def __init__(self, path: Path) -> None:
        self._db = SqliteDb(path, SCHEMA, "series-db")
        self.url = self._db.url
        self._ids: dict[tuple[str, str], int] = {}

    async def open(self) -> None:
        await self._db.open()
        await self._db.call(self._load_ids)

    async def close(self) -> None:
        await self._db.close()

    def _load_ids(self) -> None:
        rows = self._db.conn.execute("SELECT device, metric, id FROM series").fetchall()
        self._ids = {(device, metric): int(sid) for device, metric, sid in rows}

    def _add_series(
        self, conn: sqlite3.Connection, keys: set[tuple[str, str]], added: list[tuple[str, str]]
    ) -> None:
        # The cache holds every series (loaded at open), so only new series reach the database;
        # the upsert also returns the id if another writer created the series meanwhile.
        for key in keys:
            if key not in self._ids:
                row = conn.execute(
                    "INSERT INTO series (device, metric) VALUES (?, ?)"
                    " ON CONFLICT (device, metric) DO UPDATE SET device = excluded.device"
                    " RETURNING id",
                    key,
                ).fetchone()
                self._ids[key] = int(row[0])
                added.append(key)

    async def write(self, points: Sequence[Point]) -> None:
        if not points:
            return

        def insert(conn: sqlite3.Connection) -> None:
            added: list[tuple[str, str]] = []
            try:
                self._add_series(conn, {(p.device, p.metric) for p in points}, added)
                ids = self._ids
                conn.executemany(
                    "INSERT OR REPLACE INTO points (series, ts, value) VALUES (?, ?, ?)",
                    [(ids[(p.device, p.metric)], p.ts_ms, p.value) for p in points],
                )
            except BaseException:
                for key in added:  # ids of a rolled-back transaction must not be reused
                    self._ids.pop(key, None)
                raise

        await self._db.call(self._db.transaction(insert))

    async def query_range(
        self, device: str, metric: str, start_ms: int, end_ms: int, limit: int | None = None
    ) -> list[tuple[int, float]]:
        def select() -> list[tuple[int, float]]:
            rows = self._db.conn.execute(
                "SELECT p.ts, p.value FROM points p JOIN series s ON s.id = p.series"
                " WHERE s.device = ? AND s.metric = ? AND p.ts >= ? AND p.ts <= ?"
                " ORDER BY p.ts LIMIT ?",
                (device, metric, start_ms, end_ms, -1 if limit is None else limit),
            ).fetchall()
            return [(int(ts), float(value)) for ts, value in rows]

        return await self._db.call(select)

    async def query_last(self, device: str, metric: str) -> tuple[int, float] | None:
        def select() -> tuple[int, float] | None:
            row = self._db.conn.execute(
                "SELECT p.ts, p.value FROM points p JOIN series s ON s.id = p.series"
                " WHERE s.device = ? AND s.metric = ? ORDER BY p.ts DESC LIMIT 1",
                (device, metric),
            ).fetchone()
            return None if row is None else (int(row[0]), float(row[1]))

        return await self._db.call(select)

    async def metrics(self, device: str) -> list[str]:
        def select() -> list[str]:
            rows = self._db.conn.execute(
                "SELECT metric FROM series WHERE device = ? ORDER BY metric", (device,)
            ).fetchall()
            return [str(row[0]) for row in rows]

        return await self._db.call(select)

    async def delete_before(self, ts_ms: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM points WHERE ts < ?", (ts_ms,)).rowcount

        return await self._db.call(self._db.transaction(delete))

    async def count(self) -> int:
        """Return the number of stored points (for tests and benchmarks)."""
        return await self._db.call(
            lambda: int(self._db.conn.execute("SELECT count(*) FROM points").fetchone()[0])
        )

    async def ping(self) -> None:
        await self._db.probe()
