"""A durable outbox on SQLite: events waiting for the helpdesk webhook, in order per ticket.

Rows are never updated back to `pending` once they leave it (except by `retry_dead`, an operator's
decision), and delivered rows are only deleted by `purge_delivered`, so the table is also the log
of what was sent.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.adapters.sqlite_db import SqliteDb

State = Literal["pending", "delivered", "dead"]
STATES: tuple[State, ...] = ("pending", "delivered", "dead")

SCHEMA = """
-- The outbox exists so that `enqueue` means "will reach the helpdesk": pay one fsync per commit
-- (ticket events are few) so that even a power cut cannot drop an acknowledged event.
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    -- start of the current delivery effort (max_age counts from here): created_ms, or when requeued
    since_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    done_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (ticket_id, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_done ON outbox (state, done_ms);
"""

_COLUMNS = (
    "id, ticket_id, key, body, created_ms, since_ms, state, attempts, next_attempt_ms, last_error,"
    " done_ms"
)
#: the oldest pending row of every ticket: the only one that may be sent (order per ticket)
_HEADS = "SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY ticket_id"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One event for the helpdesk and where its delivery stands."""

    id: int
    ticket_id: str
    key: str
    body: bytes
    created_ms: int
    #: start of the current delivery effort: `created_ms`, or when `retry_dead` revived it
    since_ms: int
    state: State
    attempts: int
    next_attempt_ms: int
    last_error: str | None
    #: when it was delivered or given up (None while pending)
    done_ms: int | None


def _item(row: Any) -> OutboxItem:  # a sqlite3 row
    return OutboxItem(
        id=int(row[0]),
        ticket_id=str(row[1]),
        key=str(row[2]),
        body=bytes(row[3]),
        created_ms=int(row[4]),
        since_ms=int(row[5]),
        state=row[6],
        attempts=int(row[7]),
        next_attempt_ms=int(row[8]),
        last_error=None if row[9] is None else str(row[9]),
        done_ms=None if row[10] is None else int(row[10]),
    )


class SqliteOutbox:
    def __init__(self, path: Path) -> None:
        self._db = SqliteDb(path, SCHEMA, "outbox-db")
        self.url = self._db.url

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def add(self, ticket_id: str, key: str, body: bytes, now_ms: int) -> bool:
        """Store an event (committed on return); False if `key` is already stored."""

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO outbox (ticket_id, key, body, created_ms, since_ms, next_attempt_ms)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (ticket_id, key, body, now_ms, now_ms, now_ms),
            )
            return cursor.rowcount == 1

        return await self._db.call(self._db.transaction(insert))

    async def due(self, now_ms: int, limit: int) -> list[OutboxItem]:
        """Return each ticket's oldest pending item if it is due, earliest due first."""

        def select() -> list[OutboxItem]:
            rows = self._db.conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id IN ({_HEADS})"  # noqa: S608  constants
                " AND next_attempt_ms <= ? ORDER BY next_attempt_ms, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            return [_item(row) for row in rows]

        return await self._db.call(select)

    async def next_due_ms(self, after_ms: int) -> int | None:
        """Return the earliest retry time later than `after_ms` among sendable items, if any."""

        def select() -> int | None:
            row = self._db.conn.execute(
                f"SELECT MIN(next_attempt_ms) FROM outbox WHERE id IN ({_HEADS})"  # noqa: S608
                " AND next_attempt_ms > ?",
                (after_ms,),
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return await self._db.call(select)

    async def delivered(self, item_id: int, now_ms: int) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, done_ms = ?,"
                " last_error = NULL WHERE id = ? AND state = 'pending'",
                (now_ms, item_id),
            )

        await self._db.call(self._db.transaction(update))

    async def failed(
        self, item_id: int, attempts: int, next_attempt_ms: int, error: str, dead: bool
    ) -> None:
        """Record a failed attempt: retry at `next_attempt_ms`, or give up (then it is the time)."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_attempt_ms = ?, last_error = ?,"
                " done_ms = ? WHERE id = ? AND state = 'pending'",
                (
                    "dead" if dead else "pending",
                    attempts,
                    next_attempt_ms,
                    error,
                    next_attempt_ms if dead else None,
                    item_id,
                ),
            )

        await self._db.call(self._db.transaction(update))

    async def pending(self) -> int:
        """Return how many items wait for delivery (cheap: reads the partial index only)."""

        def select() -> int:
            row = self._db.conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            ).fetchone()
            return int(row[0])

        return await self._db.call(select)

    async def counts(self) -> dict[str, int]:
        def select() -> dict[str, int]:
            out: dict[str, int] = dict.fromkeys(STATES, 0)
            for state, count in self._db.conn.execute(
                "SELECT state, COUNT(*) FROM outbox GROUP BY state"
            ):
                out[str(state)] = int(count)
            return out

        return await self._db.call(select)

    async def items(self, ticket_id: str | None = None) -> list[OutboxItem]:
        """Return every stored item (of one ticket), oldest first."""

        def select() -> list[OutboxItem]:
            if ticket_id is None:
                rows = self._db.conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id")  # noqa: S608
            else:
                rows = self._db.conn.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE ticket_id = ? ORDER BY id",  # noqa: S608
                    (ticket_id,),
                )
            return [_item(row) for row in rows.fetchall()]

        return await self._db.call(select)

    async def retry_dead(self, now_ms: int, ticket_id: str | None = None) -> int:
        """Make dead items pending again (after fixing the helpdesk side); returns how many.

        They keep their id and key, so they go before any newer pending item of their ticket;
        items of the ticket delivered in the meantime are not re-sent.
        """

        def update(conn: sqlite3.Connection) -> int:
            query = (
                "UPDATE outbox SET state = 'pending', attempts = 0, since_ms = ?,"
                " next_attempt_ms = ?, done_ms = NULL WHERE state = 'dead'"
            )
            if ticket_id is None:
                return conn.execute(query, (now_ms, now_ms)).rowcount
            return conn.execute(query + " AND ticket_id = ?", (now_ms, now_ms, ticket_id)).rowcount

        return await self._db.call(self._db.transaction(update))

    async def purge_delivered(self, before_ms: int) -> int:
        """Delete items delivered before `before_ms`; dead items stay until retried or removed."""

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND done_ms < ?", (before_ms,)
            ).rowcount

        return await self._db.call(self._db.transaction(delete))
