"""StateStore on SQLite: device twins and the dead-letter table."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from daemon.adapters.sqlite_db import SqliteDb
from daemon.adapters.state_bounds import (
    WAL_LIMIT_BYTES,
    DeadLetterBound,
    DeadLetterRow,
    prune_history,
)
from daemon.ports import ACTIONS_CURSOR, DeadLetter, Outgoing

SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (
    device TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ms);
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    key TEXT NOT NULL,
    device TEXT NOT NULL,
    alert TEXT NOT NULL,
    from_phase TEXT NOT NULL,
    to_phase TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_key ON alert_events (key, id);
CREATE TABLE IF NOT EXISTS remediations (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_key ON tickets (key);
CREATE TABLE IF NOT EXISTS ticket_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_events_ticket ON ticket_events (ticket_id, at_ms);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS receive_stamps (
    key TEXT PRIMARY KEY,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outgoing (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL
);
"""


class SqliteStateStore:
    def __init__(
        self,
        path: Path,
        dead_letter_max_rows: int = 10_000,
        dead_letter_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._db = SqliteDb(path, SCHEMA, "state-db")
        self.url = self._db.url
        self._letters = DeadLetterBound(dead_letter_max_rows, dead_letter_max_bytes)

    async def open(self) -> None:
        await self._db.open()
        await self._db.call(self._bound_the_wal)

    def _bound_the_wal(self) -> None:
        conn = self._db.conn
        # Without a limit the WAL keeps its high-water mark for good. Truncated back instead.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        # Debian builds SQLite with SECURE_DELETE: every freed page is zeroed, so dropping a
        # flood's dead letters wrote as much to the WAL as it deleted (measured: 68 MiB for a
        # 64 MiB bound). FAST zeroes deleted content only where that costs no extra write
        # (b-tree pages); upstream SQLite's default zeroes nothing.
        conn.execute("PRAGMA secure_delete = FAST")

    async def close(self) -> None:
        await self._db.close()

    async def save_twins(self, twins: Sequence[dict[str, Any]]) -> None:
        rows = [(twin["id"], orjson.dumps(twin)) for twin in twins]

        def upsert(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO twins (device, data) VALUES (?, ?)", rows)

        if rows:
            await self._db.call(self._db.transaction(upsert))

    async def load_twins(self) -> list[dict[str, Any]]:
        def select() -> list[dict[str, Any]]:
            rows = self._db.conn.execute("SELECT data FROM twins ORDER BY device").fetchall()
            return [orjson.loads(row[0]) for row in rows]

        return await self._db.call(select)

    async def add_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Store rejected messages; return how many (the oldest) were dropped to stay bounded."""
        rows = [
            (x.received_ms, x.topic, x.device, x.reason, x.detail, x.payload, x.size)
            for x in letters
        ]
        chunks, dropped, clear = self._letters.plan(rows)
        for index, chunk in enumerate(chunks):  # only the first clears, if any must
            transaction = self._dead_letter_transaction(chunk, clear and index == 0)
            dropped += await self._db.call(transaction)
        return dropped

    def _dead_letter_transaction(self, rows: list[DeadLetterRow], clear: bool) -> Callable[[], int]:
        insert = self._db.transaction(lambda conn: self._letters.insert(conn, rows, clear))

        def bounded() -> int:
            try:
                return insert()
            except BaseException:
                self._letters.forget_totals()  # rolled back: count again next time
                raise

        return bounded

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def select() -> list[DeadLetter]:
            rows = self._db.conn.execute(
                "SELECT received_ms, topic, device, reason, detail, payload, size"
                " FROM dead_letters ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [DeadLetter(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in rows]

        return await self._db.call(select)

    async def delete_dead_letters_before(self, ts_ms: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            self._letters.forget_totals()
            return conn.execute("DELETE FROM dead_letters WHERE received_ms < ?", (ts_ms,)).rowcount

        return await self._db.call(self._db.transaction(delete))

    async def delete_twins(self, devices: Sequence[str]) -> int:
        """Delete the saved twins of forgotten devices; return how many there were."""

        def delete(conn: sqlite3.Connection) -> int:
            rows = [(device,) for device in devices]
            return conn.executemany("DELETE FROM twins WHERE device = ?", rows).rowcount

        return await self._db.call(self._db.transaction(delete)) if devices else 0

    async def prune_history(self, before_ms: int, events_upto_id: int) -> dict[str, int]:
        """Delete history older than `before_ms`; alert events only up to `events_upto_id`.

        Alert events past `events_upto_id` (not yet consumed by the actions) stay, however old.
        Resolved tickets go with their events; notices; finished remediations. Returns how
        many rows went, per table.
        """
        return await self._db.call(
            self._db.transaction(lambda conn: prune_history(conn, before_ms, events_upto_id))
        )

    async def save_alerts(
        self, updates: Mapping[str, bytes | None], events: Sequence[Mapping[str, Any]]
    ) -> None:
        """Store changed alert states (None deletes) and their transition events atomically."""
        upserts = [(key, data) for key, data in updates.items() if data is not None]
        deletes = [(key,) for key, data in updates.items() if data is None]
        rows = [
            (e["at_ms"], e["key"], e["device"], e["alert"], e["from_phase"], e["to_phase"],
             orjson.dumps(e))
            for e in events
        ]  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO alerts (key, data) VALUES (?, ?)", upserts)
            conn.executemany("DELETE FROM alerts WHERE key = ?", deletes)
            conn.executemany(
                "INSERT INTO alert_events (at_ms, key, device, alert, from_phase, to_phase, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        if upserts or deletes or rows:
            await self._db.call(self._db.transaction(write))

    async def load_alerts(self) -> list[bytes]:
        def select() -> list[bytes]:
            rows = self._db.conn.execute("SELECT data FROM alerts ORDER BY key").fetchall()
            return [bytes(row[0]) for row in rows]

        return await self._db.call(select)

    async def alert_events(
        self, limit: int = 100, device: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the newest transition events first (optionally of one device)."""

        def select() -> list[dict[str, Any]]:
            if device is None:
                query, args = "SELECT data FROM alert_events ORDER BY id DESC LIMIT ?", (limit,)
            else:
                query = "SELECT data FROM alert_events WHERE device = ? ORDER BY id DESC LIMIT ?"
                args = (device, limit)  # type: ignore[assignment]
            return [orjson.loads(row[0]) for row in self._db.conn.execute(query, args)]

        return await self._db.call(select)

    async def get_value(self, key: str) -> bytes | None:
        def select() -> bytes | None:
            row = self._db.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._db.call(select)

    async def set_value(self, key: str, value: bytes) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

        await self._db.call(self._db.transaction(write))

    async def save_actions(
        self,
        remediations: Mapping[str, bytes | None],
        tickets: Sequence[tuple[str, str, str, int, bytes]],
        ticket_events: Sequence[tuple[str, int, bytes]],
        notices: Sequence[tuple[str, int, bytes]],
        *,
        decisions: Mapping[str, bytes | None] | None = None,
        outgoing: Sequence[Outgoing] = (),
        cursor: int | None = None,
    ) -> list[int]:
        """Persist one round of actions in one transaction; return the new outgoing row ids.

        Everything a round decided is one durable fact: its remediation states, tickets and
        their events, notices, pending decisions, the messages it owes the broker and how far
        it read the alert events. A crash before the commit replays the round; after it, the
        round is never repeated.
        """
        decisions = decisions or {}

        def write(conn: sqlite3.Connection) -> list[int]:
            conn.executemany(
                "INSERT OR REPLACE INTO remediations (key, data) VALUES (?, ?)",
                [(k, v) for k, v in remediations.items() if v is not None],
            )
            conn.executemany(
                "DELETE FROM remediations WHERE key = ?",
                [(k,) for k, v in remediations.items() if v is None],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO tickets (id, key, status, created_ms, data)"
                " VALUES (?, ?, ?, ?, ?)",
                tickets,
            )
            conn.executemany(
                "INSERT INTO ticket_events (ticket_id, at_ms, data) VALUES (?, ?, ?)",
                ticket_events,
            )
            conn.executemany("INSERT INTO notices (device, at_ms, data) VALUES (?, ?, ?)", notices)
            conn.executemany(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                [(k, v) for k, v in decisions.items() if v is not None],
            )
            conn.executemany(
                "DELETE FROM kv WHERE key = ?", [(k,) for k, v in decisions.items() if v is None]
            )
            if cursor is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    (ACTIONS_CURSOR, str(cursor).encode()),
                )
            ids = []
            for message in outgoing:
                row = conn.execute(
                    "INSERT INTO outgoing (topic, payload, retain) VALUES (?, ?, ?)",
                    (message.topic, message.payload, int(message.retain)),
                )
                ids.append(int(row.lastrowid or 0))
            return ids

        if (
            remediations
            or tickets
            or ticket_events
            or notices
            or decisions
            or outgoing
            or (cursor is not None)
        ):
            return await self._db.call(self._db.transaction(write))
        return []

    async def alert_events_after(
        self, after_id: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """Return up to `limit` transition events with an id above `after_id`, oldest first."""

        def select() -> list[tuple[int, dict[str, Any]]]:
            rows = self._db.conn.execute(
                "SELECT id, data FROM alert_events WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
            return [(int(row[0]), orjson.loads(row[1])) for row in rows]

        return await self._db.call(select)

    async def last_alert_event_id(self) -> int:
        def select() -> int:
            row = self._db.conn.execute("SELECT max(id) FROM alert_events").fetchone()
            return int(row[0] or 0)

        return await self._db.call(select)

    async def values(self, prefix: str) -> dict[str, bytes]:
        """Return every key-value entry whose key starts with `prefix`."""

        def select() -> dict[str, bytes]:
            rows = self._db.conn.execute(
                "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            )
            return {str(row[0]): bytes(row[1]) for row in rows}

        return await self._db.call(select)

    async def load_outgoing(self) -> list[tuple[int, Outgoing]]:
        def select() -> list[tuple[int, Outgoing]]:
            rows = self._db.conn.execute(
                "SELECT id, topic, payload, retain FROM outgoing ORDER BY id"
            )
            return [(int(r[0]), Outgoing(str(r[1]), bytes(r[2]), bool(r[3]))) for r in rows]

        return await self._db.call(select)

    async def delete_outgoing(self, ids: Sequence[int]) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM outgoing WHERE id = ?", [(i,) for i in ids])

        if ids:
            await self._db.call(self._db.transaction(delete))

    async def ping(self) -> None:
        await self._db.probe()

    async def receive_stamps(self, keys: Sequence[str]) -> dict[str, int]:
        def select() -> dict[str, int]:
            found: dict[str, int] = {}
            for key in keys:
                row = self._db.conn.execute(
                    "SELECT received_ms FROM receive_stamps WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    found[key] = int(row[0])
            return found

        return await self._db.call(select) if keys else {}

    async def save_receive_stamps(
        self, new: Sequence[tuple[str, int]], done: Sequence[str], before_ms: int | None = None
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM receive_stamps WHERE key = ?", [(k,) for k in done])
            conn.executemany(
                "INSERT OR IGNORE INTO receive_stamps (key, received_ms) VALUES (?, ?)", new
            )
            if before_ms is not None:
                conn.execute("DELETE FROM receive_stamps WHERE received_ms < ?", (before_ms,))

        if new or done or before_ms is not None:
            await self._db.call(self._db.transaction(write))

    async def load_remediations(self) -> list[bytes]:
        return await self._db.call(
            lambda: [bytes(r[0]) for r in self._db.conn.execute("SELECT data FROM remediations")]
        )

    async def load_tickets(self, open_only: bool = False) -> list[bytes]:
        query = "SELECT data FROM tickets"
        if open_only:
            query += " WHERE status != 'resolved'"
        query += " ORDER BY created_ms"
        return await self._db.call(lambda: [bytes(r[0]) for r in self._db.conn.execute(query)])

    async def ticket_events(self, ticket_id: str) -> list[dict[str, Any]]:
        def select() -> list[dict[str, Any]]:
            rows = self._db.conn.execute(
                "SELECT data FROM ticket_events WHERE ticket_id = ? ORDER BY id", (ticket_id,)
            )
            return [orjson.loads(row[0]) for row in rows]

        return await self._db.call(select)

    async def notices(self, device: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        def select() -> list[dict[str, Any]]:
            if device is None:
                rows = self._db.conn.execute(
                    "SELECT data FROM notices ORDER BY id DESC LIMIT ?", (limit,)
                )
            else:
                rows = self._db.conn.execute(
                    "SELECT data FROM notices WHERE device = ? ORDER BY id DESC LIMIT ?",
                    (device, limit),
                )
            return [orjson.loads(row[0]) for row in rows]

        return await self._db.call(select)
