"""Bounds of the SQLite state store: dead letters by rows and bytes, history by age, forgotten
twins."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.adapters.state_bounds import TRANSACTION_BYTES, DeadLetterBound, letter_bytes
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.core.remediation import LogEntry, Remediation, RemState
from daemon.core.tickets import Ticket, TicketStatus
from daemon.core.twin import DeviceTwin
from daemon.ports import DeadLetter

T = TypeVar("T")
T0 = 1_700_000_000_000
DAY = 86_400_000
TOPIC = "devices/d/telemetry"


def with_state(
    path: Path, body: Callable[[SqliteStateStore], Awaitable[T]], rows: int = 10_000,
    size: int = 64 * 1024 * 1024,
) -> T:  # fmt: skip
    """Open the state store at `path` with these dead-letter bounds, run `body`, close it."""

    async def main() -> T:
        store = SqliteStateStore(path, rows, size)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def letter(number: int, size: int = 10) -> DeadLetter:
    payload = number.to_bytes(4, "big") + b"x" * (size - 4)
    return DeadLetter(T0 + number, TOPIC, "d", "not_json", "bad", payload, size)


def weight(size: int) -> int:
    return size + len(TOPIC) + len("bad")


def stored(path: Path) -> tuple[list[int], int]:
    """The numbers of the stored letters (oldest first) and their bytes, read with plain SQL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT payload, topic, detail FROM dead_letters ORDER BY id"
        ).fetchall()
    numbers = [int.from_bytes(bytes(p)[:4], "big") for p, _, _ in rows]
    return numbers, sum(len(bytes(p)) + len(t.encode()) + len(d.encode()) for p, t, d in rows)


def test_row_bound_keeps_the_newest(tmp_path: Path) -> None:
    """Test that past max_rows the oldest letters go, and each insert says how many."""

    async def body(store: SqliteStateStore) -> list[int]:
        return [
            await store.add_dead_letters([letter(n) for n in range(start, start + 3)])
            for start in range(0, 12, 3)
        ]

    assert with_state(tmp_path / "state.db", body, rows=5) == [0, 1, 3, 3]
    assert stored(tmp_path / "state.db")[0] == [7, 8, 9, 10, 11]


def test_byte_bound_holds_and_counts_what_a_letter_carries(tmp_path: Path) -> None:
    """Test that past max_bytes the oldest letters go until the bytes fit."""
    bound = 9 * weight(1000) + 500  # nine letters and a half

    async def body(store: SqliteStateStore) -> int:
        dropped = 0
        for n in range(20):
            dropped += await store.add_dead_letters([letter(n, 1000)])
        return dropped

    assert with_state(tmp_path / "state.db", body, size=bound) == 11
    numbers, total = stored(tmp_path / "state.db")
    assert numbers == list(range(11, 20))
    assert total <= bound


def test_a_batch_larger_than_the_bound_keeps_only_its_newest(tmp_path: Path) -> None:
    """Test that letters of one batch that can never fit are not written, and are counted."""

    async def body(store: SqliteStateStore) -> int:
        await store.add_dead_letters([letter(100)])
        return await store.add_dead_letters([letter(n, 1000) for n in range(10)])

    assert with_state(tmp_path / "state.db", body, size=3 * weight(1000)) == 8
    assert stored(tmp_path / "state.db")[0] == [7, 8, 9]


def test_totals_are_counted_again_after_reopen_and_age_deletes(tmp_path: Path) -> None:
    """Test that the bound holds across a restart and after a delete by age."""
    path = tmp_path / "state.db"

    async def fill(store: SqliteStateStore) -> int:
        return await store.add_dead_letters([letter(n) for n in range(5)])

    async def reopened(store: SqliteStateStore) -> tuple[int, int, int]:
        first = await store.add_dead_letters([letter(5)])  # full already: drops letter 0
        aged = await store.delete_dead_letters_before(T0 + 3)  # 1 and 2 go by age
        second = await store.add_dead_letters([letter(6), letter(7)])  # room for both
        return first, aged, second

    assert with_state(path, fill, rows=5) == 0
    assert with_state(path, reopened, rows=5) == (1, 2, 0)
    assert stored(path)[0] == [3, 4, 5, 6, 7]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(min_value=4, max_value=300), max_size=6), max_size=8),
    rows=st.integers(min_value=1, max_value=8),
    size=st.integers(min_value=200, max_value=1500),
)
def test_table_is_always_the_longest_suffix_within_both_bounds(
    batches: list[list[int]], rows: int, size: int
) -> None:
    """Test that after every insert the table holds exactly the newest letters that fit (a letter
    larger than the byte bound on its own is never kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        history: list[tuple[int, int]] = []  # (number, weight)

        async def body(store: SqliteStateStore) -> None:
            for batch in batches:
                letters = [letter(len(history) + i, s) for i, s in enumerate(batch)]
                history.extend((x.received_ms - T0, weight(len(x.payload))) for x in letters)
                await store.add_dead_letters(letters)
                expected: list[int] = []
                total = 0
                for number, w in reversed([(n, w) for n, w in history if w <= size]):
                    if len(expected) >= rows or total + w > size:
                        break
                    expected.append(number)
                    total += w
                assert stored(path)[0] == expected[::-1]

        with_state(path, body, rows=rows, size=size)


def alert_event(at_ms: int) -> dict[str, Any]:
    return {"at_ms": at_ms, "key": "k", "device": "d", "alert": "A",
            "from_phase": "pending", "to_phase": "firing"}  # fmt: skip


def ticket(ticket_id: str, created: int, updated: int, resolved: bool) -> Ticket:
    return Ticket(
        ticket_id, f"key-{ticket_id}", "d", "A", "fault", "s", "minor", "c", "skill", "q",
        created, updated, TicketStatus.RESOLVED if resolved else TicketStatus.OPEN,
        resolved_ms=updated if resolved else None,
    )  # fmt: skip


def remediation(key: str, state: RemState, last_ms: int) -> bytes:
    return Remediation(key, "d", "A", 1, (), state=state, log=(LogEntry(last_ms, "x"),)).to_json()


def test_prune_history_deletes_old_rows_and_keeps_unconsumed_events(tmp_path: Path) -> None:
    """Test that history retention deletes only old, finished rows and no unconsumed event."""
    old, young, cut = T0, T0 + 10 * DAY, T0 + 5 * DAY
    tickets = [
        ticket("old-resolved", old, old + 1, resolved=True),
        ticket("recently-resolved", old, young, resolved=True),
        ticket("old-open", old, old + 1, resolved=False),
    ]

    async def body(store: SqliteStateStore) -> tuple[dict[str, int], dict[str, int]]:
        await store.save_alerts({}, [alert_event(t) for t in (old, old, old, old, young, young)])
        await store.save_actions(
            {
                "done-old": remediation("done-old", RemState.CLEARED, old),
                "failed-old": remediation("failed-old", RemState.FAILED, old),
                "done-young": remediation("done-young", RemState.CLEARED, young),
                "running-old": remediation("running-old", RemState.WAITING, old),
            },
            [(t.id, t.key, t.status.value, t.created_ms, t.to_json()) for t in tickets],
            [(t.id, t.updated_ms, orjson.dumps({"at_ms": t.updated_ms})) for t in tickets]
            + [("old-resolved", old, b"{}")],
            [("d", old, b"{}"), ("d", old, b"{}"), ("d", young, b"{}")],
        )
        behind = await store.prune_history(cut, events_upto_id=2)  # actions consumed 1 and 2
        caught_up = await store.prune_history(cut, events_upto_id=6)
        return behind, caught_up

    behind, caught_up = with_state(tmp_path / "state.db", body)
    assert behind == {"alert_events": 2, "notices": 2, "tickets": 1, "remediations": 2}
    assert caught_up == {"alert_events": 2, "notices": 0, "tickets": 0, "remediations": 0}
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        events = [r[0] for r in conn.execute("SELECT id FROM alert_events ORDER BY id")]
        kept = {r[0] for r in conn.execute("SELECT id FROM tickets")}
        ticket_events = {r[0] for r in conn.execute("SELECT ticket_id FROM ticket_events")}
        remediations = {r[0] for r in conn.execute("SELECT key FROM remediations")}
        notices = conn.execute("SELECT count(*) FROM notices").fetchone()[0]
    assert events == [5, 6]
    assert kept == {"recently-resolved", "old-open"}
    assert ticket_events == kept
    assert remediations == {"done-young", "running-old"}
    assert notices == 1


def test_prune_history_without_young_rows_deletes_only_up_to_the_cursor(tmp_path: Path) -> None:
    """Test that with every event old, the events past the cursor still stay."""

    async def body(store: SqliteStateStore) -> dict[str, int]:
        await store.save_alerts({}, [alert_event(T0) for _ in range(4)])
        return await store.prune_history(T0 + DAY, events_upto_id=3)

    assert with_state(tmp_path / "state.db", body)["alert_events"] == 3
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM alert_events")] == [4]


def test_delete_twins_removes_only_those(tmp_path: Path) -> None:
    """Test that forgotten twins are deleted from the state DB and the others stay."""

    async def body(store: SqliteStateStore) -> tuple[int, int, list[str]]:
        await store.save_twins([DeviceTwin(d, T0).to_dict() for d in ("a", "b", "c")])
        deleted = await store.delete_twins(["a", "c", "unknown"])
        none = await store.delete_twins([])
        return deleted, none, [t["id"] for t in await store.load_twins()]

    assert with_state(tmp_path / "state.db", body) == (2, 0, ["b"])


def test_a_large_batch_is_written_in_transactions_of_at_most_4_mib() -> None:
    """Test that the kept letters of a batch are split so no transaction carries over 4 MiB."""
    bound = DeadLetterBound(max_rows=1_000, max_bytes=64 * 1024 * 1024)
    rows = [(T0, TOPIC, "d", "not_json", "bad", b"x" * 1024 * 1024, 1) for _ in range(10)]
    chunks, dropped, clear = bound.plan(rows)
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    assert all(sum(letter_bytes(r) for r in chunk) <= TRANSACTION_BYTES for chunk in chunks)
    assert (dropped, clear) == (0, False)
    assert [row for chunk in chunks for row in chunk] == rows
