"""session_service.store_health: when the store counts as failing, and what is reported."""

from __future__ import annotations

from session_service.store_health import Report, WriteHealth


def test_a_batch_that_writes_nothing_starts_an_episode_reported_once() -> None:
    health = WriteHealth(report_every=60)
    assert health.batch_done(5, 0, 0.0) is Report.NONE and health.ok
    assert health.batch_done(0, 3, 1.0, "disk I/O error") is Report.FAILING
    assert not health.ok and health.failing_since == 1.0 and health.lost_in_episode == 3
    assert health.batch_done(0, 2, 2.0) is Report.NONE  # no line per write
    assert health.probe_failed(30.0) is Report.NONE
    assert health.batch_done(0, 1, 61.5) is Report.STILL_FAILING  # a periodic reminder
    assert health.batch_done(0, 1, 62.0) is Report.NONE
    assert health.lost_in_episode == 7 and health.last_error == "disk I/O error"
    assert health.batch_done(1, 0, 70.0) is Report.RECOVERED and health.ok
    message = health.message(Report.RECOVERED, "x.db", "", "", 70.0)
    assert "after 69.0s" in message and "7 write(s) were lost" in message
    assert health.batch_done(4, 0, 71.0) is Report.NONE


def test_a_failing_probe_reports_without_losing_records() -> None:
    health = WriteHealth(report_every=10)
    health.batch_done(0, 1, 0.0, "full")
    assert health.probe_failed(5.0) is Report.NONE
    assert health.probe_failed(10.0) is Report.STILL_FAILING
    assert health.lost_total == 1


def test_some_writes_lost_in_a_written_batch_leave_the_store_healthy() -> None:
    health = WriteHealth(report_every=60)
    assert health.batch_done(9, 1, 0.0, "bad value") is Report.DROPPED and health.ok
    assert health.batch_done(9, 1, 1.0) is Report.NONE  # rate-limited
    assert health.lost_total == 2
    assert health.batch_done(9, 1, 61.0) is Report.DROPPED
    # A new episode counts its own losses.
    assert health.batch_done(0, 4, 62.0) is Report.FAILING and health.lost_in_episode == 4
