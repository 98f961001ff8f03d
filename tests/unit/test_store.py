"""session_service.store: records, command log, retention, recovery of orphaned sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aip_wire.vocab import CancelReason
from session_service import metrics, store_sql
from session_service.records import Claim
from session_service.store import MEMORY, SessionRecord, SessionStore


def record(session_id: str, *, task_name: str = "t", device_id: str = "dev1",
           created_at: float | None = None, replica_id: str = "r1") -> SessionRecord:
    return SessionRecord(
        session_id=session_id, task_name=task_name, request='{"steps": []}',
        device_id=device_id, requester_id="c1", requester_kind="constellation",
        agent="plan", replica_id=replica_id, state="running",
        created_at=time.time() if created_at is None else created_at,
    )


def end(store: SessionStore, session_id: str, *, state: str = "completed",
        ended_at: float | None = None, result: object = "ok") -> None:
    store.record_ended(session_id, state=state, result=result, error=None,
                       cancel_reason=None, ended_at=time.time() if ended_at is None
                       else ended_at, steps_done=1, steps_total=1)


@contextlib.contextmanager
def opened(path: str = MEMORY, replica_id: str = "r1") -> Iterator[SessionStore]:
    """A store at ``path``, open for the block and closed after it."""
    store = SessionStore(path, replica_id)
    store.open()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store() -> Iterator[SessionStore]:
    with opened() as memory:
        yield memory


def test_a_session_and_its_command_log_round_trip(store: SessionStore) -> None:
    store.record_started(record("s1", task_name="job"))
    store.record_command("s1", 0, "r-a", [{"tool_name": "a", "call_id": "1"}], 100.0)
    store.record_results("s1", 0, [{"status": "success", "result": 2**70}], 100.5, "answered")
    store.record_command("s1", 1, "r-b", [{"tool_name": "b"}], 101.0)
    store.record_results("s1", 1, [{"status": "failure"}], 103.0, "timeout")
    store.record_command("s1", 2, "r-c", [{"tool_name": "c"}], 104.0)
    assert store.flush()
    running = store.get("s1")
    assert running is not None and running.state == "running" and running.ended_at is None
    end(store, "s1", result={"big": 2**70})
    assert store.flush()

    got = store.get("s1")
    assert got is not None
    assert (got.task_name, got.device_id, got.requester_id, got.replica_id) == (
        "job", "dev1", "c1", "r1")
    assert got.state == "completed" and got.ended_at is not None
    assert json.loads(got.result_json or "") == {"big": 2**70}  # big integers kept exactly
    assert [c.response_id for c in got.commands] == ["r-a", "r-b", "r-c"]
    assert [c.status for c in got.commands] == ["answered", "timeout", "unanswered"]
    assert json.loads(got.commands[0].actions_json) == [{"tool_name": "a", "call_id": "1"}]
    assert json.loads(got.commands[0].results_json or "")[0]["result"] == 2**70
    assert (got.commands[1].sent_at, got.commands[1].received_at) == (101.0, 103.0)
    assert got.commands[2].results_json is None and got.commands[2].received_at is None
    assert store.get("nope") is None
    assert store.get("s1", with_commands=False).commands == []  # type: ignore[union-attr]


def test_find_by_task_name_gives_the_latest(store: SessionStore) -> None:
    store.record_started(record("old", task_name="named", created_at=1.0))
    store.record_started(record("new", task_name="named", created_at=2.0))
    store.record_started(record("other", task_name="else", created_at=3.0))
    store.flush()
    assert store.find_by_task_name("named").session_id == "new"  # type: ignore[union-attr]
    assert store.find_by_task_name("missing") is None


def test_list_filters_and_orders_newest_first(store: SessionStore) -> None:
    store.record_started(record("a", device_id="dev1", created_at=1.0))
    store.record_started(record("b", device_id="dev2", created_at=2.0))
    store.record_started(record("c", device_id="dev1", created_at=3.0, replica_id="r2"))
    end(store, "a")
    store.flush()
    assert [r.session_id for r in store.list()] == ["c", "b", "a"]
    assert [r.session_id for r in store.list(device_id="dev1")] == ["c", "a"]
    assert [r.session_id for r in store.list(running_only=True)] == ["c", "b"]
    assert [r.session_id for r in store.list(replica_id="r1")] == ["b", "a"]
    assert [r.session_id for r in store.list(limit=1)] == ["c"]


def test_a_reused_session_id_keeps_its_first_record(store: SessionStore) -> None:
    """The store is the arbiter of ids: a second creation changes nothing and learns
    the holder through its claim."""
    first, second = Claim(), Claim()
    store.record_started(record("s", task_name="first"), claim=first)
    store.record_command("s", 0, "r-1", [], 1.0)
    end(store, "s")
    store.record_started(record("s", task_name="second"), claim=second)
    store.flush()
    assert first.winner is None
    assert second.winner is not None and second.winner.task_name == "first"
    assert second.winner.state == "completed"
    got = store.get("s")
    assert got is not None and got.task_name == "first" and got.state == "completed"
    assert [c.response_id for c in got.commands] == ["r-1"]


def test_prune_forgets_old_ended_sessions_and_their_commands(store: SessionStore) -> None:
    now = time.time()
    for session_id in ("old", "recent", "running"):
        store.record_started(record(session_id, created_at=now - 100))
        store.record_command(session_id, 0, f"r-{session_id}", [], now - 100)
    end(store, "old", ended_at=now - 50)
    end(store, "recent", ended_at=now - 5)
    store.prune(now - 10)
    store.flush()
    assert store.get("old") is None
    assert store.get("recent") is not None
    assert store.get("running") is not None  # running sessions are never pruned
    with store._lock:  # the command log of a pruned session goes with it
        assert store._connection().execute(
            "SELECT count(*) FROM commands WHERE session_id = 'old'").fetchone() == (0,)


def test_a_failing_write_is_logged_and_the_rest_of_the_batch_kept(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    before = metrics.STORE_WRITE_ERRORS._value.get()
    store.record_started(record("s"))
    store.record_command("s", object(), "r-bad", [], 1.0)  # type: ignore[arg-type]
    store.record_command("s", 1, "r-good", [], 2.0)
    assert store.flush()
    got = store.get("s")
    assert got is not None and [c.response_id for c in got.commands] == ["r-good"]
    assert metrics.STORE_WRITE_ERRORS._value.get() == before + 1
    assert "dropped" in caplog.text
    store.record_command("s", 2, "r-after", [], 3.0)  # the writer lives on
    assert store.flush()
    assert len(store.get("s").commands) == 2  # type: ignore[union-attr]


def test_close_writes_everything_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "records.sqlite3")
    first = SessionStore(path, "r1")
    first.open()
    first.record_started(record("s"))
    for seq in range(500):
        first.record_command("s", seq, f"r-{seq}", [{"n": seq}], float(seq))
    end(first, "s")
    first.close()
    second = SessionStore(path, "r2")
    assert second.open() == 0  # it ended: nothing to recover
    try:
        got = second.get("s")
        assert got is not None and got.state == "completed" and len(got.commands) == 500
    finally:
        second.close()


def test_sessions_of_a_dead_replica_are_marked_failed_at_open(tmp_path: Path) -> None:
    path = str(tmp_path / "records.sqlite3")
    alive = SessionStore(path, "alive")
    alive.open()
    dying = SessionStore(path, "dying")
    dying.open()
    try:
        alive.record_started(record("a-run", replica_id="alive"))
        dying.record_started(record("d-run", replica_id="dying"))
        dying.record_command("d-run", 0, "r-1", [], 1.0)
        alive.flush()
        dying.flush()
        # "dying" goes away without ending its session (as after SIGKILL: its lock is gone).
        assert dying._owners is not None
        dying._owners.release()

        restarted = SessionStore(path, "restarted")
        assert restarted.open() == 1
        try:
            gone = restarted.get("d-run")
            assert gone is not None and gone.state == "failed"
            assert (gone.cancel_reason == CancelReason.REPLICA_RESTARTED
                    and gone.ended_at is not None)
            assert gone.error and CancelReason.REPLICA_RESTARTED in gone.error
            assert [c.status for c in gone.commands] == ["unanswered"]
            still = restarted.get("a-run")  # the live replica's session is left alone
            assert still is not None and still.state == "running"
        finally:
            restarted.close()
    finally:
        alive.close()
        dying.close()
    assert not [p for p in Path(f"{path}.owners").iterdir()]  # every lock file removed
    rows = sqlite3.connect(path).execute("SELECT state FROM sessions ORDER BY session_id")
    assert [row[0] for row in rows] == ["running", "failed"]


def test_a_commit_interval_groups_writes_into_one_transaction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    grouped = SessionStore(MEMORY, "r1", commit_interval=0.3)
    batches: list[int] = []
    apply = grouped._apply
    monkeypatch.setattr(grouped, "_apply", lambda batch: (batches.append(len(batch)),
                                                          apply(batch)))
    grouped.open()
    try:
        grouped.record_started(record("s1"))
        for seq in range(20):  # arrive while the writer waits out the interval
            grouped.record_command("s1", seq, f"r-{seq}", [], 1.0)
        assert grouped.flush()
        assert batches == [22]  # 21 writes and the flush marker: one commit
        assert len(grouped.get("s1").commands) == 20  # type: ignore[union-attr]
    finally:
        grouped.close()


def test_a_backlog_is_written_without_pausing_between_full_batches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    grouped = SessionStore(MEMORY, "r1", commit_interval=0.2)
    monkeypatch.setattr("session_service.store.MAX_BATCH", 10)
    pauses: list[float | None] = []

    class Pauses(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            pauses.append(timeout)
            return super().wait(timeout)

    grouped._urgent = Pauses()
    grouped.record_started(record("s1"))
    for seq in range(45):  # queued before the writer starts: a backlog of five batches
        grouped.record_command("s1", seq, f"r-{seq}", [], 1.0)
    grouped.open()
    try:
        assert grouped.flush(timeout=10)
        assert pauses == [0.2]  # before the first batch only
        assert len(grouped.get("s1").commands) == 45  # type: ignore[union-attr]
    finally:
        grouped.close()


async def test_written_callbacks_run_on_the_loop_with_each_outcome(
        store: SessionStore) -> None:
    loop = asyncio.get_running_loop()
    outcomes: list[tuple[str, bool, bool]] = []

    def told(name: str) -> Callable[[bool], None]:
        return lambda ok: outcomes.append((name, ok, asyncio.get_running_loop() is loop))

    store.record_started(record("s"), told("created"))
    store.record_command("s", object(), "r-bad", [], 1.0)  # type: ignore[arg-type]
    end(store, "s")
    store.record_ended(object(), state="completed", result=None,  # type: ignore[arg-type]
                       error=None, cancel_reason=None, ended_at=2.0, steps_done=0,
                       steps_total=0, written=told("bad end"))
    store.record_ended("s", state="completed", result="ok", error=None,
                       cancel_reason=None, ended_at=3.0, steps_done=0, steps_total=0,
                       written=told("end"))
    await until_true(lambda: len(outcomes) == 3)
    assert outcomes == [("created", True, True), ("bad end", False, True), ("end", True, True)]


async def test_an_urgent_write_cuts_the_commit_interval_short() -> None:
    grouped = SessionStore(MEMORY, "r1", commit_interval=2.0)
    grouped.open()
    try:
        grouped.record_started(record("first"))  # the writer starts its 2 s pause
        await asyncio.sleep(0.05)
        committed = asyncio.get_running_loop().create_future()
        began = time.monotonic()
        grouped.record_started(record("s"), committed.set_result)
        async with asyncio.timeout(1.0):
            assert await committed is True
        assert time.monotonic() - began < 0.5
        assert grouped.get("s") is not None and grouped.get("first") is not None
    finally:
        grouped.close()


async def test_failing_writes_turn_health_off_once_and_a_probe_turns_it_back_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = SessionStore(str(tmp_path / "r.sqlite3"), "r1", probe_interval=0.05)
    changes: list[bool] = []
    failing.watch_health(changes.append)
    failing.open()
    broken = {"on": True}
    real_insert = store_sql.insert_command

    def insert(db: sqlite3.Connection, *args: object) -> None:
        if broken["on"]:
            raise sqlite3.OperationalError("disk I/O error")
        real_insert(db, *args)  # type: ignore[arg-type]

    def probe(db: sqlite3.Connection, instance: str) -> None:
        if broken["on"]:
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_sql, "insert_command", insert)
    monkeypatch.setattr(store_sql, "probe", probe)
    before = metrics.STORE_WRITE_ERRORS._value.get()
    try:
        for seq in range(3):
            failing.record_command("s", seq, f"r-{seq}", [], 1.0)
            assert failing.flush()
        await until_true(lambda: changes == [False])
        assert not failing.writable and metrics.STORE_HEALTHY._value.get() == 0
        assert metrics.STORE_WRITE_ERRORS._value.get() == before + 3
        assert caplog.text.count("writes fail, records are being lost") == 1
        broken["on"] = False  # the disk is back: the next probe finds out, no traffic
        await until_true(lambda: changes == [False, True])
        assert failing.writable and metrics.STORE_HEALTHY._value.get() == 1
        assert "writes work again" in caplog.text and "3 write(s) were lost" in caplog.text
    finally:
        failing.close()


async def until_true(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.01)


def test_a_new_file_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    from session_service import store_db

    fresh = str(tmp_path / "fresh.sqlite3")
    opened = SessionStore(fresh, "r1")
    opened.open()
    opened.close()
    old = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(old) as db:  # made by an earlier version: 4 KiB pages
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE t (x)")
    opened = SessionStore(old, "r1")
    opened.open()
    opened.close()
    sizes = {}
    for path in (fresh, old):
        with sqlite3.connect(path) as db:
            sizes[path] = db.execute("PRAGMA page_size").fetchone()[0]
    assert sizes == {fresh: store_db.PAGE_SIZE, old: 4096}
    assert store_db.PAGE_SIZE != 4096  # SQLite's default, which big results pay for
