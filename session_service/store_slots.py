"""The devices' queues in the shared store, so that every replica shares each one.

Each session on a device holds a ticket in ``device_slots`` from its creation to its
end (:mod:`session_service.core.device_queue` has the rule). Taking a place in line
and starting are check-then-act: they count the device's tickets, then write. Two
replicas must not both see a free slot, so those writes hold one queue lock until
their transaction commits: SQLite's write lock (every batch starts ``BEGIN
IMMEDIATE``), PostgreSQL's transaction-scoped advisory lock below. One lock for every
device rather than one per device: a batch may touch many devices, and locks taken in
different orders by two replicas would deadlock. Giving a ticket back needs no lock (it
only frees a slot), so the end of a session never waits for it.

Plain functions of a connection, run by the store's writer inside its batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from session_service.core.device_queue import (
    GONE,
    RUN,
    Placement,
    QueueLimits,
    Verdict,
    place,
)
from session_service.store_db import Db, dialect

#: The advisory lock of the queues in PostgreSQL ("AIPQ"; the migrations use another).
QUEUE_LOCK = 0x41495051


def _lock(db: Db) -> None:
    if dialect(db) == "postgresql":
        db.execute("SELECT pg_advisory_xact_lock(?)", (QUEUE_LOCK,))


def _counts(db: Db, device_id: str, before: int | None) -> tuple[int, int]:
    """Running tickets of the device, and waiting ones (older than ``before``)."""
    running = db.execute("SELECT COUNT(*) FROM device_slots WHERE device_id = ? AND "
                         "running = 1", (device_id,)).fetchone()[0]
    if before is None:
        waiting = db.execute("SELECT COUNT(*) FROM device_slots WHERE device_id = ? AND "
                             "running = 0", (device_id,)).fetchone()[0]
    else:
        waiting = db.execute("SELECT COUNT(*) FROM device_slots WHERE device_id = ? AND "
                             "running = 0 AND ticket < ?", (device_id, before)).fetchone()[0]
    return int(running), int(waiting)


def enqueue(db: Db, session_id: str, device_id: str, instance: str,
            limits: QueueLimits) -> Placement:
    """Give a new session its ticket (running, or waiting at the end of the line);
    FULL takes none. The caller has just created the session in this transaction."""
    _lock(db)
    running, waiting = _counts(db, device_id, None)
    placement = place(running=running, waiting_ahead=waiting, limits=limits, new=True)
    if placement.verdict is Verdict.FULL:
        return placement
    last = db.execute("SELECT MAX(ticket) FROM device_slots WHERE device_id = ?",
                      (device_id,)).fetchone()[0]
    db.execute("INSERT INTO device_slots (session_id, device_id, instance, ticket, running) "
               "VALUES (?, ?, ?, ?, ?)",
               (session_id, device_id, instance, int(last or 0) + 1,
                1 if placement.verdict is Verdict.RUN else 0))
    return placement


def poll(db: Db, session_ids: Iterable[str], limits: QueueLimits) -> dict[str, Placement]:
    """Start, oldest first, what may start among the waiting ``session_ids``; answer
    where each stands (GONE: its ticket was taken back, its replica counted as lost)."""
    _lock(db)
    ids = list(session_ids)
    answers: dict[str, Placement] = {}
    rows: list[tuple[str, str, int, int]] = []
    for start in range(0, len(ids), 500):  # within every database's parameter limit
        chunk = ids[start:start + 500]
        rows += db.execute(
            "SELECT session_id, device_id, ticket, running FROM device_slots WHERE "
            f"session_id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
    for session_id, device_id, ticket, is_running in sorted(rows, key=lambda r: r[2]):
        if is_running:
            answers[session_id] = RUN
            continue
        running, ahead = _counts(db, device_id, ticket)
        placement = place(running=running, waiting_ahead=ahead, limits=limits, new=False)
        if placement.verdict is Verdict.RUN:
            db.execute("UPDATE device_slots SET running = 1 WHERE session_id = ?",
                       (session_id,))
            db.execute("UPDATE sessions SET state = 'running' WHERE session_id = ? AND "
                       "state = 'queued'", (session_id,))
        answers[session_id] = placement
    for session_id in ids:
        answers.setdefault(session_id, GONE)
    return answers


def release(db: Db, session_id: str) -> None:
    db.execute("DELETE FROM device_slots WHERE session_id = ?", (session_id,))


def release_where(db: Db, instance_scope: str, args: tuple[object, ...]) -> None:
    """Take back the tickets of the instances ``instance_scope`` selects (dead ones)."""
    db.execute(f"DELETE FROM device_slots WHERE {instance_scope}", args)


def position(db: Db, session_id: str) -> int:
    """A waiting session's place in line (1: next), 0 when it does not wait."""
    row = db.execute("SELECT device_id, ticket, running FROM device_slots "
                     "WHERE session_id = ?", (session_id,)).fetchone()
    if row is None or row[2]:
        return 0
    ahead = db.execute("SELECT COUNT(*) FROM device_slots WHERE device_id = ? AND "
                       "running = 0 AND ticket < ?", (row[0], row[1])).fetchone()[0]
    return int(ahead) + 1
