"""One SQLite connection owned by one worker thread, driven from asyncio.

SQLite calls block; running them on a dedicated single thread keeps the event loop free and gives
every statement on the connection a total order, which is what batched writers want.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from daemon.errors import StoreUnavailable

T = TypeVar("T")


class SqliteDb:
    def __init__(self, path: Path, schema: str, name: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._schema = schema
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of this process (kill -9); only an OS crash can
        # lose the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(self._schema)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS health_probe (id INTEGER PRIMARY KEY, at_ns INTEGER)"
        )
        self._conn = conn

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        await self.call(lambda: None, connect=True)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            conn = self._conn
            await self.call(conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    def _run(self, fn: Callable[[], T], connect: bool) -> T:
        if connect:
            self._connect()
        return fn()

    async def call(self, fn: Callable[[], T], connect: bool = False) -> T:
        if self._executor is None:
            raise StoreUnavailable(self.url, "not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, fn, connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    async def probe(self) -> None:
        """Prove the database takes a write now: one row rewritten in its own transaction.

        A read would succeed on a read-only or full disk; readiness must see what writers see.
        """

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO health_probe (id, at_ns) VALUES (1, ?)", (time.time_ns(),)
            )

        await self.call(self.transaction(write))

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; use it only inside a function passed to `call`."""
        if self._conn is None:
            raise StoreUnavailable(self.url, "not open")
        return self._conn

    def transaction(self, statements: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        """Wrap `statements` in BEGIN/COMMIT (ROLLBACK on error) for `call`."""

        def run() -> T:
            conn = self.conn
            if conn.in_transaction:  # left open by a failed COMMIT (disk I/O error)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = statements(conn)
                conn.execute("COMMIT")
            except BaseException:
                # After an I/O error SQLite may have rolled back already: the original error is
                # the one worth reporting.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return result

        return run
