"""The one-driver-per-device rule and the in-memory queue of a replica without a store."""

from __future__ import annotations

import pytest

from session_service.core.device_queue import (
    FULL,
    GONE,
    RUN,
    MemorySlots,
    Placement,
    QueueLimits,
    Verdict,
    place,
)

ONE = QueueLimits(max_running=1, max_queued=2)


@pytest.mark.parametrize(("running", "ahead", "new", "limits", "expected"), [
    (0, 0, True, ONE, RUN),
    (1, 0, True, ONE, Placement(Verdict.WAIT, 1)),
    (1, 1, True, ONE, Placement(Verdict.WAIT, 2)),
    (1, 2, True, ONE, FULL),
    (1, 2, False, ONE, Placement(Verdict.WAIT, 3)),  # in line already: keeps its place
    (0, 1, False, ONE, Placement(Verdict.WAIT, 2)),  # a free slot, but someone is older
    (0, 0, False, ONE, RUN),
    (5, 9, True, QueueLimits(0, 0), RUN),  # no running limit: nothing waits
    (1, 0, True, QueueLimits(1, 0), FULL),  # no queue: a busy device refuses
    (1, 0, True, QueueLimits(2, 16), RUN),
])
def test_place(running: int, ahead: int, new: bool, limits: QueueLimits,
               expected: Placement) -> None:
    assert place(running=running, waiting_ahead=ahead, limits=limits, new=new) == expected


def test_memory_slots_first_come_first_served() -> None:
    slots = MemorySlots(ONE)
    assert slots.enqueue("a", "dev1") == RUN
    assert slots.enqueue("b", "dev1") == Placement(Verdict.WAIT, 1)
    assert slots.enqueue("c", "dev1") == Placement(Verdict.WAIT, 2)
    assert slots.enqueue("d", "dev1") == FULL
    assert slots.enqueue("x", "dev2") == RUN  # another device has its own line
    # Asked out of order, the younger still waits behind the older.
    assert slots.poll(["c", "b"]) == {"c": Placement(Verdict.WAIT, 2),
                                      "b": Placement(Verdict.WAIT, 1)}
    slots.release("a")
    assert slots.poll(["c"]) == {"c": Placement(Verdict.WAIT, 2)}
    assert slots.poll(["b", "c"]) == {"b": RUN, "c": Placement(Verdict.WAIT, 1)}
    assert slots.counts() == {"dev1": (1, 1), "dev2": (1, 0)}
    slots.release("c")  # a waiting session that is cancelled leaves the line
    slots.release("b")
    slots.release("x")
    assert slots.counts() == {}
    assert slots.poll(["b"]) == {"b": GONE}
