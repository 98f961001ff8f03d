"""The SQL of the session store: each write, as plain functions (the schema is
:mod:`session_service.store_schema`).

Every write runs in the store's writer thread, inside the transaction of its batch, and
serializes its JSON there, so the event loop never pays for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aip_wire.frames import dumps
from aip_wire.vocab import CancelReason
from session_service import store_files, store_slots
from session_service.core.device_queue import QueueLimits, Verdict
from session_service.records import Claim, SessionRecord
from session_service.store_db import Db

log = logging.getLogger("aip.session.store")



def _json(value: Any) -> str:
    return dumps(value).decode()


#: The states of a session that has not ended, in SQL.
LIVE = "state IN ('queued', 'running')"

#: A session's progress from its command log: one past the last command answered (or
#: timed out, or undeliverable). A live session's row is not rewritten per command: a
#: row holds the request, which can be large, and SQLite (as PostgreSQL) writes a whole
#: new row for any change, which made this update the replica's costliest statement.
PROGRESS = ("(SELECT MAX(seq) + 1 FROM commands WHERE commands.session_id = "
            "sessions.session_id AND commands.status NOT IN ('sent', 'unanswered'))")

#: A session's columns as :func:`record_of` reads them: :class:`SessionRecord`'s fields
#: in order, then the file of its result.
COLUMNS = ("session_id, task_name, request, device_id, requester_id, requester_kind, agent, "
           "replica_id, state, created_at, result_json, error, cancel_reason, ended_at, "
           f"CASE WHEN {LIVE} THEN COALESCE({PROGRESS}, steps_done) ELSE steps_done END "
           "AS steps_done, steps_total, result_file")


def record_of(db: Db, row: Any) -> SessionRecord:
    """The record of a row selected with :data:`COLUMNS`, its result read back from its
    file if it has one."""
    *fields, result_file = row
    record = SessionRecord(*fields)
    if result_file is not None:
        record.result_json = store_files.text_of(db, record.result_json, result_file)
    return record


def claim_session(db: Db, record: SessionRecord, instance: str,
                  claim: Claim, limits: QueueLimits | None = None) -> None:
    """Create the session unless its id, or its requester's idempotency key, is taken;
    the unique keys decide, whichever replica asks. A taken id is never overwritten
    while its record is retained: the holder is read back into ``claim`` for the
    ownership rule (a key's holder is the same requester's first session).

    A new session then takes its ticket in its device's line (``limits``; none or no
    running limit: it runs at once): it is stored ``queued`` while it waits, and not
    at all when the line is full (``claim.placement`` says which)."""
    key = record.idempotency_key or None
    cursor = db.execute(
        "INSERT INTO sessions (session_id, task_name, request, device_id, requester_id, "
        "requester_kind, agent, replica_id, instance, state, created_at, idempotency_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (record.session_id, record.task_name, record.request, record.device_id,
         record.requester_id, record.requester_kind, record.agent, record.replica_id,
         instance, record.state, record.created_at, key),
    )
    if cursor.rowcount == 1:
        claim.winner = None
        claim.placement = store_slots.RUN
        if limits is None or not limits.max_running:
            return
        claim.placement = store_slots.enqueue(db, record.session_id, record.device_id,
                                              instance, limits)
        if claim.placement.verdict is Verdict.FULL:
            db.execute("DELETE FROM sessions WHERE session_id = ?", (record.session_id,))
        elif claim.placement.verdict is Verdict.WAIT:
            db.execute("UPDATE sessions SET state = 'queued' WHERE session_id = ?",
                       (record.session_id,))
        return
    row = db.execute(f"SELECT {COLUMNS} FROM sessions WHERE session_id = ?",
                     (record.session_id,)).fetchone()
    if row is None and key is not None:
        row = db.execute(f"SELECT {COLUMNS} FROM sessions WHERE requester_id = ? "
                         "AND idempotency_key = ?", (record.requester_id, key)).fetchone()
    if row is None:  # held a moment ago, pruned since: rare enough to refuse plainly
        raise RuntimeError(f"session {record.session_id!r} conflicted with a record "
                           "that is gone")
    claim.winner = record_of(db, row)


def insert_command(db: Db, session_id: str, seq: int, response_id: str,
                   actions: Any, sent_at: float) -> None:
    db.execute(
        "INSERT INTO commands (session_id, seq, response_id, actions_json, sent_at, status) "
        "VALUES (?, ?, ?, ?, ?, 'sent') ON CONFLICT (session_id, seq) DO UPDATE SET "
        "response_id = excluded.response_id, actions_json = excluded.actions_json, "
        "sent_at = excluded.sent_at, status = 'sent'",
        (session_id, seq, response_id, _json(actions), sent_at),
    )


def insert_answered_command(db: Db, session_id: str, seq: int, response_id: str,
                            actions: Any, sent_at: float, results: Any, received_at: float,
                            status: str) -> None:
    """:func:`insert_command` and then :func:`update_command`, as one statement: a
    command sent and answered between two commits is written once."""
    placed = store_files.place(db, session_id, f"c{seq}", results)
    db.execute(
        "INSERT INTO commands (session_id, seq, response_id, actions_json, sent_at, status, "
        "results_json, results_file, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (session_id, seq) DO UPDATE SET response_id = excluded.response_id, "
        "actions_json = excluded.actions_json, sent_at = excluded.sent_at, "
        "status = excluded.status, results_json = excluded.results_json, "
        "results_file = excluded.results_file, received_at = excluded.received_at",
        (session_id, seq, response_id, _json(actions), sent_at, status, placed.text,
         placed.file, received_at),
    )


def update_command(db: Db, session_id: str, seq: int, results: Any,
                   received_at: float, status: str) -> None:
    placed = store_files.place(db, session_id, f"c{seq}", results)
    db.execute(
        "UPDATE commands SET results_json = ?, results_file = ?, received_at = ?, "
        "status = ? WHERE session_id = ? AND seq = ?",
        (placed.text, placed.file, received_at, status, session_id, seq),
    )
    # The session's progress is read from here (PROGRESS), in the same batch.


def insert_turn(db: Db, session_id: str, seq: int, turn: Any, at: float) -> None:
    db.execute(
        "INSERT INTO model_turns (session_id, seq, turn_json, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (session_id, seq) DO UPDATE SET turn_json = excluded.turn_json, "
        "created_at = excluded.created_at",
        (session_id, seq, _json(turn), at),
    )


def end_session(db: Db, session_id: str, state: str, result: Any,
                error: str | None, cancel_reason: str | None, ended_at: float,
                steps_done: int, steps_total: int) -> None:
    placed = store_files.place(db, session_id, store_files.RESULT, result)
    db.execute(
        "UPDATE sessions SET state = ?, result_json = ?, result_file = ?, error = ?, "
        "cancel_reason = ?, ended_at = ?, steps_done = ?, steps_total = ? "
        f"WHERE session_id = ? AND {LIVE}",
        (state, placed.text, placed.file, error, cancel_reason, ended_at, steps_done,
         steps_total, session_id),
    )
    store_slots.release(db, session_id)
    db.execute("UPDATE commands SET status = 'unanswered' WHERE session_id = ? AND "
               "status = 'sent'", (session_id,))


def prune(db: Db, ended_before: float) -> int:
    """Forget sessions (their commands, turns and files) that ended before
    ``ended_before``."""
    files = store_files.of(db)
    pruned = [] if files is None else [row[0] for row in db.execute(
        "SELECT session_id FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?",
        (ended_before,))]
    db.execute("DELETE FROM model_turns WHERE session_id IN (SELECT session_id FROM "
               "sessions WHERE ended_at IS NOT NULL AND ended_at < ?)", (ended_before,))
    db.execute("DELETE FROM commands WHERE session_id IN (SELECT session_id FROM sessions "
               "WHERE ended_at IS NOT NULL AND ended_at < ?)", (ended_before,))
    cursor = db.execute("DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?",
                        (ended_before,))
    if files is not None:
        # Before the commit: should it fail, the rows of sessions past their retention
        # remain and read their large values as missing, which is no loss worth a second
        # pass after every commit.
        files.drop(pruned)
    return cursor.rowcount


def probe(db: Db, instance: str) -> None:
    """A write of a few bytes that still needs the disk: it appends a page to the log."""
    db.execute("INSERT INTO probes (instance, probed_at) VALUES (?, ?) ON CONFLICT "
               "(instance) DO UPDATE SET probed_at = excluded.probed_at",
               (instance, time.time()))


def renew_lease(db: Db, instance: str, replica_id: str, address: str,
                expires: float, now: float) -> None:
    """Renew this replica's lease, then fail the running sessions of every replica whose
    lease lapsed (or was reaped); a conditional update, so each is failed once."""
    db.execute(
        "INSERT INTO replicas (instance, replica_id, address, lease_expires) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (instance) DO UPDATE SET "
        "lease_expires = excluded.lease_expires, address = excluded.address",
        (instance, replica_id, address, expires),
    )
    lost = fail_orphans(db, now, CancelReason.REPLICA_LOST,
                        "the replica running it stopped renewing its lease")
    db.execute("DELETE FROM replicas WHERE lease_expires < ?", (now,))
    if lost:
        log.warning("%d session(s) of a replica whose lease lapsed marked failed (%s)",
                    lost, CancelReason.REPLICA_LOST)


def fail_orphans(db: Db, now: float, reason: str, why: str,
                 instances: list[str] | None = None) -> int:
    """Mark failed the live sessions of ``instances``, or of every instance without a
    live lease, and take back their tickets in the devices' lines; returns how many."""
    scope: tuple[str, tuple[Any, ...]]
    if instances is None:
        scope = ("instance NOT IN (SELECT instance FROM replicas WHERE lease_expires >= ?)",
                 (now,))
    else:
        scope = (f"instance IN ({', '.join('?' * len(instances))})", tuple(instances))
    store_slots.release_where(db, scope[0], scope[1])
    where = f"{LIVE} AND {scope[0]}"
    db.execute("UPDATE commands SET status = 'unanswered' WHERE status = 'sent' AND "
               f"session_id IN (SELECT session_id FROM sessions WHERE {where})", scope[1])
    cursor = db.execute(
        "UPDATE sessions SET state = 'failed', cancel_reason = ?, error = ?, ended_at = ?, "
        f"steps_done = COALESCE({PROGRESS}, steps_done) WHERE {where}",
        (reason, f"Session cancelled: {reason} ({why} before it ended)", now, *scope[1]),
    )
    return cursor.rowcount
