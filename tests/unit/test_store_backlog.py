"""The store's write backlog in bytes: what is queued whole and what is elided."""

from __future__ import annotations

from session_service.store_backlog import ALWAYS_KEPT, Backlog, elided


def test_results_are_admitted_until_the_limit_and_again_once_written() -> None:
    backlog = Backlog(limit=10_000)
    assert backlog.admit(6_000)
    assert not backlog.admit(6_000)  # would pass the limit
    assert backlog.bytes == 6_000
    backlog.written(6_000)
    assert backlog.admit(6_000)


def test_small_results_are_always_admitted() -> None:
    backlog = Backlog(limit=0)
    assert backlog.admit(ALWAYS_KEPT)
    assert not backlog.admit(ALWAYS_KEPT + 1)


def test_elided_results_keep_everything_but_the_payload() -> None:
    results = [{"status": "success", "error": None, "call_id": "c1", "result": "x" * 10}]
    (item,) = elided(results, 10)
    assert (item["status"], item["call_id"], item["error"]) == ("success", "c1", None)
    assert item["result"]["elided"] is True and item["result"]["bytes"] == 10
    assert results[0]["result"] == "x" * 10  # the session's own copy is untouched
    assert elided("odd", 3)["elided"] is True


def test_a_store_whose_writer_lags_records_further_results_elided() -> None:
    import json
    import time

    from session_service import metrics
    from session_service.records import SessionRecord
    from session_service.store import MEMORY, SessionStore

    store = SessionStore(MEMORY, "r1", backlog_bytes=250_000)
    store.open()
    try:
        store.record_started(SessionRecord(
            session_id="s1", task_name="t", request="{}", device_id="d", requester_id="c",
            requester_kind="backend", agent="plan", replica_id="r1", state="running",
            created_at=time.time()))
        assert store.flush()
        elided_before = metrics.STORE_ELIDED._value.get()
        with store._lock:  # the writer cannot write meanwhile: a disk that lags
            for seq in range(4):
                store.record_command("s1", seq, f"r{seq}", [{"tool_name": "x"}], 1.0)
                store.record_results("s1", seq, [{"status": "success", "call_id": "a",
                                                  "result": "x" * 100_000}], 2.0, "answered")
            assert store.backlog.bytes <= 250_000
        assert store.flush()
        assert store.backlog.bytes == 0
        stored = store.get("s1", True)
        assert stored is not None
        kept = [json.loads(c.results_json or "null")[0]["result"] for c in stored.commands]
        assert kept[0] == kept[1] == "x" * 100_000  # within the bound: whole
        assert all(isinstance(r, dict) and r["elided"] for r in kept[2:])
        assert metrics.STORE_ELIDED._value.get() - elided_before == 2
        # Once written, the backlog has room again.
        store.record_results("s1", 3, [{"status": "success", "result": "y" * 100_000}],
                             3.0, "answered")
        assert store.flush()
        stored = store.get("s1", True)
        assert stored is not None and '"yyyy' in (stored.commands[3].results_json or "")
    finally:
        store.close()
