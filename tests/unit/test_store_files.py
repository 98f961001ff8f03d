"""session_service.store_files: large values of an SQLite store in files beside it."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_service import metrics, store_files, store_reads, store_schema
from session_service.store import MEMORY, SessionStore
from tests.unit.test_store import end, opened, record

#: A screenshot's worth of base64, over the threshold once serialized.
BIG = "data:image/png;base64," + "QUJD" * (store_files.SPILL_BYTES // 2)


def big_results(marker: str = "") -> list[dict[str, object]]:
    return [{"status": "success", "call_id": marker, "result": BIG}]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "records.sqlite3")


@pytest.fixture
def store(path: str) -> Iterator[SessionStore]:
    with opened(path) as on_file:
        yield on_file


def rows(path: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def files_under(path: str) -> list[str]:
    root = store_files.root_of(path)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_large_results_go_to_files_and_read_back_whole(store: SessionStore, path: str) -> None:
    store.record_started(record("s1"))
    store.record_command("s1", 0, "r-0", [{"tool_name": "shot"}], 1.0)
    store.record_results("s1", 0, big_results("a"), 1.5, "answered")
    store.record_command("s1", 1, "r-1", [{"tool_name": "click"}], 2.0)
    store.record_results("s1", 1, [{"status": "success", "result": "ok"}], 2.5, "answered")
    assert store.flush()
    end(store, "s1", result={"steps": big_results("a")})
    assert store.flush()

    stored = rows(path, "SELECT seq, results_json IS NULL, results_file FROM commands "
                        "ORDER BY seq")
    directory = store_files.session_dir("s1")
    assert stored == [(0, 1, f"{directory}/c0.json"), (1, 0, None)]
    assert rows(path, "SELECT result_json IS NULL, result_file FROM sessions") == [
        (1, f"{directory}/result.json")]
    assert files_under(path) == [f"{directory}/c0.json", f"{directory}/result.json"]

    got = store.get("s1")
    assert got is not None
    assert json.loads(got.commands[0].results_json or "") == big_results("a")
    assert json.loads(got.commands[1].results_json or "") == [{"status": "success",
                                                              "result": "ok"}]
    assert json.loads(got.result_json or "") == {"steps": big_results("a")}
    # The lists and pages read results back too (the public API returns them).
    listed = store.list()
    assert [json.loads(r.result_json or "") for r in listed] == [{"steps": big_results("a")}]
    page = store.page(store_reads.Filters(), page_size=10)
    assert json.loads(page.records[0].result_json or "") == {"steps": big_results("a")}


def test_small_values_stay_in_their_rows(store: SessionStore, path: str) -> None:
    store.record_started(record("s1"))
    store.record_command("s1", 0, "r-0", [], 1.0)
    store.record_results("s1", 0, [{"status": "success", "result": "x" * 1000}], 1.5,
                         "answered")
    end(store, "s1", result={"ok": True})
    assert store.flush()
    assert rows(path, "SELECT results_file FROM commands") == [(None,)]
    assert rows(path, "SELECT result_file FROM sessions") == [(None,)]
    assert not store_files.root_of(path).exists()


def test_results_answered_apart_from_their_command_and_again(
    store: SessionStore, path: str
) -> None:
    """The update (not folded into the insert) writes the file; later results replace
    it, and smaller ones move back into the row."""
    store.record_started(record("s1"))
    store.record_command("s1", 0, "r-0", [], 1.0)
    assert store.flush()
    store.record_results("s1", 0, big_results("first"), 1.5, "answered")
    assert store.flush()
    store.record_results("s1", 0, big_results("second"), 1.6, "answered")
    assert store.flush()
    got = store.get("s1")
    assert got is not None and json.loads(got.commands[0].results_json or "") == \
        big_results("second")
    store.record_results("s1", 0, [{"status": "success"}], 1.7, "answered")
    assert store.flush()
    assert rows(path, "SELECT results_json, results_file FROM commands") == [
        ('[{"status":"success"}]', None)]
    assert not any(name.endswith(".tmp") for name in files_under(path))


def test_pruning_a_session_removes_its_files(store: SessionStore, path: str) -> None:
    now = time.time()
    for session_id in ("old", "recent"):
        store.record_started(record(session_id, created_at=now - 100))
        store.record_command(session_id, 0, "r", [], now - 100)
        store.record_results(session_id, 0, big_results(), now - 99, "answered")
    end(store, "old", ended_at=now - 50, result=big_results())
    end(store, "recent", ended_at=now - 5)
    store.prune(now - 10)
    assert store.flush()
    assert store.get("old") is None
    assert files_under(path) == [f"{store_files.session_dir('recent')}/c0.json"]


def test_a_missing_file_reads_as_missing_and_is_logged(
    store: SessionStore, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    store.record_started(record("s1"))
    store.record_command("s1", 0, "r-0", [], 1.0)
    store.record_results("s1", 0, big_results(), 1.5, "answered")
    assert store.flush()
    (store_files.root_of(path) / store_files.session_dir("s1") / "c0.json").unlink()
    got = store.get("s1")
    assert got is not None
    value = json.loads(got.commands[0].results_json or "")
    assert value["missing"] is True and value["file"].endswith("/c0.json")
    assert "cannot be read" in caplog.text and "c0.json" in caplog.text


def test_a_file_that_cannot_be_written_fails_its_write_alone(
    store: SessionStore, path: str
) -> None:
    """Like any failing write: dropped and counted, the rest of the batch kept."""
    store_files.root_of(path).write_text("not a directory")
    before = metrics.STORE_WRITE_ERRORS._value.get()
    store.record_started(record("s1"))
    store.record_command("s1", 0, "r-0", [], 1.0)
    store.record_results("s1", 0, big_results(), 1.5, "answered")
    store.record_command("s1", 1, "r-1", [], 2.0)
    assert store.flush()
    got = store.get("s1")
    assert got is not None and [c.seq for c in got.commands] == [1]
    assert metrics.STORE_WRITE_ERRORS._value.get() == before + 1


def test_a_memory_store_keeps_large_values_in_rows() -> None:
    with opened(MEMORY) as memory:
        memory.record_started(record("s1"))
        memory.record_command("s1", 0, "r-0", [], 1.0)
        memory.record_results("s1", 0, big_results(), 1.5, "answered")
        assert memory.flush()
        got = memory.get("s1")
        assert got is not None and json.loads(got.commands[0].results_json or "") == \
            big_results()


def test_a_file_of_the_previous_schema_gains_the_file_columns(path: str) -> None:
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("BEGIN")
        store_schema.version(db)
        for number, script in enumerate(store_schema.MIGRATIONS[:5], start=1):
            for statement in store_schema._statements(script):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
        db.execute("INSERT INTO commands (session_id, seq, response_id, actions_json, "
                   "sent_at, status, results_json) VALUES ('s0', 0, 'r', '[]', 1, "
                   "'answered', '[1]')")
        db.execute("COMMIT")
    with opened(path) as upgraded:
        upgraded.record_started(record("s0"))
        end(upgraded, "s0")
        assert upgraded.flush()
        got = upgraded.get("s0")
        assert got is not None and got.commands[0].results_json == "[1]"
        assert got.result_json == '"ok"'


@pytest.mark.parametrize("size", [store_files.SPILL_BYTES + 1, 20 * store_files.ALIGNMENT,
                                  store_files.KEPT_BUFFER + 12345])
def test_a_value_is_written_byte_for_byte_whatever_its_alignment(
    tmp_path: Path, size: int
) -> None:
    files = store_files.FileStore(tmp_path / "files")
    value = "x" * (size - 2)  # serialized with its two quotes: exactly ``size`` bytes
    placed = files.place("s1", "c0", value)
    assert placed.text is None and placed.file is not None
    assert (tmp_path / "files" / placed.file).read_bytes() == json.dumps(value).encode()
    assert files.read(placed.file) == json.dumps(value)
    # Only a buffer up to the bound is kept between writes.
    kept = files._buffer
    assert (kept is not None and len(kept) >= size) if size <= store_files.KEPT_BUFFER \
        else (kept is None or len(kept) < size)


def test_a_file_system_without_direct_writes_gets_buffered_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse_direct)
    files = store_files.FileStore(tmp_path / "files")
    for seq in range(2):
        placed = files.place("s1", f"c{seq}", BIG)
        assert placed.file is not None and files.read(placed.file) == json.dumps(BIG)
    assert files.direct is False
