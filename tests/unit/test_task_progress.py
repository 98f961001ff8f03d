"""aip-task's progress lines for a session that waits for its device."""

from __future__ import annotations

import io

from aip_client.task_output import Progress


def test_a_queued_session_shows_its_place_and_its_start() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.watching(0, 2, queue_position=2)
    assert progress.status == "queued (2)"
    progress.queued(1)
    progress.session_started()
    assert progress.status == "running"
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["waiting for the device: position 2 in its queue",
                     "waiting for the device: position 1 in its queue",
                     "the device is free: the session starts"]


def test_a_session_that_never_waited_just_runs() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.watching(0, 1)
    progress.session_started()
    assert progress.status == "running" and out.getvalue() == ""
