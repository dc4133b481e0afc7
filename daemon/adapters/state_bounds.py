"""Bounds of the SQLite state DB: the dead-letter table by rows and bytes, history by age.

The functions take the connection of `SqliteDb` and run in its worker thread, inside
`SqliteDb.transaction`; `SqliteStateStore` calls them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

#: what a dead letter weighs: what it carries (SQLite adds a little per row: see docs/operations.md)
LETTER_BYTES = "length(payload) + length(CAST(topic AS BLOB)) + length(CAST(detail AS BLOB))"
_TOTALS = f"SELECT count(*), coalesce(sum({LETTER_BYTES}), 0) FROM dead_letters"  # noqa: S608  constant
_OLDEST = f"SELECT id, {LETTER_BYTES} FROM dead_letters ORDER BY id"  # noqa: S608  constant
_DRAW = 256  # oldest rows read at a time while dropping

#: the WAL is truncated to this after a checkpoint (SQLite checkpoints it at 1,000 pages, 4 MiB)
WAL_LIMIT_BYTES = 8 * 1024 * 1024
#: dead letters written per transaction at most: a transaction is whole in the WAL until the
#: next checkpoint, so one flood batch in one transaction would double the disk at the bound
TRANSACTION_BYTES = 4 * 1024 * 1024

DeadLetterRow = tuple[int, str, str | None, str, str, bytes, int]  # as in the INSERT
FINISHED_REMEDIATIONS = ("cleared", "failed", "not_needed")  # core.remediation.DONE


def letter_bytes(row: DeadLetterRow) -> int:
    """What a dead-letter row weighs (LETTER_BYTES computed in Python)."""
    return len(row[5]) + len(row[1].encode()) + len(row[4].encode())


class DeadLetterBound:
    """Keep the dead-letter table within `max_rows` and `max_bytes`, dropping the oldest first.

    Rejected messages can arrive at broker speed, up to 64 KiB each: without a bound they fill a
    disk in minutes. A SUM over the table per insert would cost as much as the table, so the row
    and byte totals are kept here: counted once when first needed (and again after a delete by
    age or a failed transaction), then moved by every insert and drop.
    """

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._totals: tuple[int, int] | None = None

    def forget_totals(self) -> None:
        """Count again next time (rows were deleted by other means, or a transaction failed)."""
        self._totals = None

    def totals(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """Rows and bytes in the table now."""
        if self._totals is None:
            # length() of a BLOB reads the row header only, not the payload's overflow pages.
            count, weight = conn.execute(_TOTALS).fetchone()
            self._totals = (int(count), int(weight))
        return self._totals

    def plan(self, rows: Sequence[DeadLetterRow]) -> tuple[list[list[DeadLetterRow]], int, bool]:
        """Split what is kept of `rows` (oldest first) into transactions; return them, how many
        letters of the batch are dropped unwritten, and whether every stored letter must go.

        The table always holds the newest letters that fit both bounds: letters of the batch
        that do not fit are not written at all (and, as they are newer, nothing older stays). A
        letter larger than `max_bytes` on its own is never kept. Each transaction carries at
        most TRANSACTION_BYTES, so the WAL, which holds a whole transaction, stays small.
        """
        keep: list[DeadLetterRow] = []
        kept_bytes = 0
        clear = False
        for row in reversed(rows):  # the newest letters are the ones worth keeping
            size = letter_bytes(row)
            if size > self.max_bytes:
                continue
            if len(keep) >= self.max_rows or kept_bytes + size > self.max_bytes:
                clear = True
                break
            keep.append(row)
            kept_bytes += size
        keep.reverse()
        chunks: list[list[DeadLetterRow]] = []
        chunk_bytes = TRANSACTION_BYTES
        for row in keep:
            size = letter_bytes(row)
            if chunk_bytes + size > TRANSACTION_BYTES:
                chunks.append([])
                chunk_bytes = 0
            chunks[-1].append(row)
            chunk_bytes += size
        return chunks, len(rows) - len(keep), clear

    def insert(self, conn: sqlite3.Connection, rows: Sequence[DeadLetterRow], clear: bool) -> int:
        """Make room for `rows` (every stored letter goes if `clear`), then insert them; return
        how many stored letters were dropped. One transaction: run it in `SqliteDb.transaction`.

        Room is made first because pages freed in a transaction are reused by it: the file stays
        at the bound (inserting first grows it by a batch, measured: 1.8x).
        """
        count, weight = self.totals(conn)
        size = sum(letter_bytes(row) for row in rows)
        if clear:
            gone, freed = count, weight
            conn.execute("DELETE FROM dead_letters")
        else:
            gone, freed = self._drop_oldest(
                conn, count + len(rows) - self.max_rows, weight + size - self.max_bytes
            )
        conn.executemany(
            "INSERT INTO dead_letters (received_ms, topic, device, reason, detail, payload, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._totals = (count - gone + len(rows), weight - freed + size)
        return gone

    @staticmethod
    def _drop_oldest(conn: sqlite3.Connection, rows: int, weight: int) -> tuple[int, int]:
        """Delete the oldest letters until `rows` rows and `weight` bytes are gone."""
        gone = freed = 0
        if rows <= 0 and weight <= 0:
            return 0, 0
        last_id: int | None = None
        cursor = conn.execute(_OLDEST)
        while gone < rows or freed < weight:
            chunk = cursor.fetchmany(_DRAW)
            if not chunk:
                break
            for row_id, size in chunk:
                if gone >= rows and freed >= weight:
                    break
                last_id, gone, freed = row_id, gone + 1, freed + int(size)
        cursor.close()
        if last_id is not None:
            conn.execute("DELETE FROM dead_letters WHERE id <= ?", (last_id,))
        return gone, freed


def _prune_by_time(
    conn: sqlite3.Connection, table: str, before_ms: int, upto_id: int | None = None
) -> int:
    """Delete rows older than `before_ms` (and with an id of at most `upto_id`).

    Rows are written in time order, so the first row (in id order) that is young enough bounds
    the delete to an id range: neither statement reads the rows that stay.
    """
    young = conn.execute(
        f"SELECT id FROM {table} WHERE at_ms >= ? ORDER BY id LIMIT 1",  # noqa: S608  our tables
        (before_ms,),
    ).fetchone()
    where, args = ["at_ms < ?"], [before_ms]
    if young is not None:
        where.append("id < ?")
        args.append(int(young[0]))
    if upto_id is not None:
        where.append("id <= ?")
        args.append(upto_id)
    statement = f"DELETE FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608  our tables
    return conn.execute(statement, args).rowcount


def prune_history(conn: sqlite3.Connection, before_ms: int, events_upto_id: int) -> dict[str, int]:
    """Delete history older than `before_ms`; return how many rows went, per table.

    - alert events with an id of at most `events_upto_id` (the actions' cursor: an event the
      actions have not consumed is never deleted, however old);
    - resolved tickets last touched before then, with their ticket events;
    - notices;
    - finished remediations (cleared, failed, not needed) whose last step is that old.
    """
    deleted = {
        "alert_events": _prune_by_time(conn, "alert_events", before_ms, events_upto_id),
        "notices": _prune_by_time(conn, "notices", before_ms),
    }
    candidates = conn.execute(
        "SELECT id, data FROM tickets t WHERE status = 'resolved' AND created_ms < ?"
        " AND NOT EXISTS (SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.at_ms >= ?)",
        (before_ms, before_ms),
    ).fetchall()
    tickets = []
    for ticket_id, data in candidates:
        ticket = orjson.loads(data)
        touched = max(ticket.get("updated_ms") or 0, ticket.get("resolved_ms") or 0)
        if touched < before_ms:
            tickets.append((ticket_id,))
    conn.executemany("DELETE FROM ticket_events WHERE ticket_id = ?", tickets)
    conn.executemany("DELETE FROM tickets WHERE id = ?", tickets)
    deleted["tickets"] = len(tickets)
    deleted["remediations"] = conn.execute(
        "DELETE FROM remediations"
        " WHERE json_extract(CAST(data AS TEXT), '$.state') IN (?, ?, ?)"
        " AND coalesce(json_extract(CAST(data AS TEXT), '$.log[#-1].at_ms'), 0) < ?",
        (*FINISHED_REMEDIATIONS, before_ms),
    ).rowcount
    return deleted
