"""session_service.store_fold: a command sent and answered within one batch, written once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from session_service import store_schema, store_sql
from session_service.store import MEMORY, SessionStore
from session_service.store_fold import fold
from tests.unit.test_store import record


@dataclass
class W:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    written: Any = None


def sent(session_id: str, seq: int) -> W:
    return W(store_sql.insert_command, (session_id, seq, f"r-{seq}", [{"n": seq}], 1.0))


def answered(session_id: str, seq: int) -> W:
    return W(store_sql.update_command, (session_id, seq, [{"ok": seq}], 2.0, "answered"))


def test_a_command_sent_and_answered_in_one_batch_is_one_insert() -> None:
    turn = W(store_sql.insert_turn, ("s", 0, {}, 1.5))
    out = fold([sent("s", 0), sent("t", 0), turn, answered("t", 0), answered("s", 0)], W)
    assert [w.function for w in out] == [store_sql.insert_answered_command,
                                         store_sql.insert_answered_command,
                                         store_sql.insert_turn]
    assert out[0].args == ("s", 0, "r-0", [{"n": 0}], 1.0, [{"ok": 0}], 2.0, "answered")
    assert out[1].args[0] == "t"


def test_other_writes_end_the_folding() -> None:
    end = W(store_sql.end_session, ("s", "completed", None, None, None, 3.0, 1, 1))
    out = fold([sent("s", 0), end, answered("s", 0)], W)
    assert [w.function for w in out] == [store_sql.insert_command, store_sql.end_session,
                                         store_sql.update_command]
    # An answer whose command was written by an earlier batch stays an update.
    assert [w.function for w in fold([answered("s", 1)], W)] == [store_sql.update_command]
    # So does one after a write somebody waits on.
    waited = W(store_sql.insert_turn, ("s", 0, {}, 1.5), written=lambda ok: None)
    out = fold([sent("s", 2), waited, answered("s", 2)], W)
    assert out[-1].function is store_sql.update_command


@pytest.mark.parametrize("folded", [True, False])
def test_folded_or_not_the_rows_are_the_same(folded: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if not folded:
        monkeypatch.setattr("session_service.store.store_fold.fold",
                            lambda writes, make: writes)
    store = SessionStore(MEMORY, "r1", commit_interval=0.3)
    store.open()
    try:
        store.record_started(record("s"))
        for seq in range(3):
            store.record_command("s", seq, f"r-{seq}", [{"n": seq}], 1.0 + seq)
            if seq < 2:
                store.record_results("s", seq, [{"ok": seq}], 1.5 + seq, "answered")
        assert store.flush()
        got = store.get("s")
        assert got is not None and got.steps_done == 2
        assert [(c.response_id, c.status, c.results_json, c.received_at) for c in got.commands] \
            == [("r-0", "answered", '[{"ok":0}]', 1.5), ("r-1", "answered", '[{"ok":1}]', 2.5),
                ("r-2", "sent", None, None)]
        assert store.backlog.bytes == 0  # every result's bytes were counted as written
    finally:
        store.close()


def test_the_statement_matches_insert_then_update() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    store_schema.migrate(db)
    store_sql.insert_command(db, "a", 0, "r", [1], 1.0)
    store_sql.update_command(db, "a", 0, [2], 2.0, "timeout")
    store_sql.insert_answered_command(db, "b", 0, "r", [1], 1.0, [2], 2.0, "timeout")
    rows = db.execute("SELECT * FROM commands ORDER BY session_id").fetchall()
    assert [row[1:] for row in rows] == [(0, "r", "[1]", 1.0, "timeout", "[2]", 2.0,
                                          None)] * 2
