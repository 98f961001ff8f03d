"""The SQL of the session store: its schema and each write, as plain functions.

Every write runs in the store's writer thread, inside the transaction of its batch, and
serializes its JSON there, so the event loop never pays for it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from aip_wire.frames import dumps
from session_service.records import SessionRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    task_name      TEXT NOT NULL,
    request        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    requester_id   TEXT NOT NULL,
    requester_kind TEXT NOT NULL,   -- device, constellation, http, backend
    agent          TEXT NOT NULL,
    replica_id     TEXT NOT NULL,   -- the replica that ran it
    instance       TEXT NOT NULL,   -- the store user that ran it (liveness lock)
    state          TEXT NOT NULL,   -- running, completed, failed, cancelled
    result_json    TEXT,
    error          TEXT,
    cancel_reason  TEXT,
    steps_done     INTEGER NOT NULL DEFAULT 0,
    steps_total    INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,   -- seconds since the epoch
    ended_at       REAL
);
CREATE INDEX IF NOT EXISTS sessions_by_task_name ON sessions (task_name, created_at);
CREATE INDEX IF NOT EXISTS sessions_by_created ON sessions (created_at);
CREATE INDEX IF NOT EXISTS sessions_by_ended ON sessions (ended_at);
CREATE INDEX IF NOT EXISTS sessions_running ON sessions (instance) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS commands (
    session_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,  -- 0, 1, ... in the order sent
    response_id  TEXT NOT NULL,
    actions_json TEXT NOT NULL,
    sent_at      REAL NOT NULL,
    status       TEXT NOT NULL,     -- sent, answered, timeout, undeliverable, unanswered
    results_json TEXT,
    received_at  REAL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
-- One row per store user, rewritten while writes fail, to learn when they work again.
CREATE TABLE IF NOT EXISTS probes (
    instance  TEXT PRIMARY KEY,
    probed_at REAL NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

COLUMNS = ("session_id, task_name, request, device_id, requester_id, requester_kind, agent, "
           "replica_id, state, created_at, result_json, error, cancel_reason, ended_at, "
           "steps_done, steps_total")


def _json(value: Any) -> str:
    return dumps(value).decode()


def insert_session(db: sqlite3.Connection, record: SessionRecord, instance: str) -> None:
    # A session id may be reused once its session has ended: the new run replaces it.
    db.execute("DELETE FROM commands WHERE session_id = ?", (record.session_id,))
    db.execute(
        "INSERT OR REPLACE INTO sessions (session_id, task_name, request, device_id, "
        "requester_id, requester_kind, agent, replica_id, instance, state, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (record.session_id, record.task_name, record.request, record.device_id,
         record.requester_id, record.requester_kind, record.agent, record.replica_id,
         instance, record.state, record.created_at),
    )


def insert_command(db: sqlite3.Connection, session_id: str, seq: int, response_id: str,
                   actions: Any, sent_at: float) -> None:
    db.execute(
        "INSERT OR REPLACE INTO commands (session_id, seq, response_id, actions_json, "
        "sent_at, status) VALUES (?, ?, ?, ?, ?, 'sent')",
        (session_id, seq, response_id, _json(actions), sent_at),
    )


def update_command(db: sqlite3.Connection, session_id: str, seq: int, results: Any,
                   received_at: float, status: str) -> None:
    db.execute(
        "UPDATE commands SET results_json = ?, received_at = ?, status = ? "
        "WHERE session_id = ? AND seq = ?",
        (_json(results), received_at, status, session_id, seq),
    )


def end_session(db: sqlite3.Connection, session_id: str, state: str, result: Any,
                error: str | None, cancel_reason: str | None, ended_at: float,
                steps_done: int, steps_total: int) -> None:
    db.execute(
        "UPDATE sessions SET state = ?, result_json = ?, error = ?, cancel_reason = ?, "
        "ended_at = ?, steps_done = ?, steps_total = ? WHERE session_id = ?",
        (state, _json(result), error, cancel_reason, ended_at, steps_done, steps_total,
         session_id),
    )
    db.execute("UPDATE commands SET status = 'unanswered' WHERE session_id = ? AND "
               "status = 'sent'", (session_id,))


def prune(db: sqlite3.Connection, ended_before: float) -> int:
    """Forget sessions (and their commands) that ended before ``ended_before``."""
    db.execute("DELETE FROM commands WHERE session_id IN (SELECT session_id FROM sessions "
               "WHERE ended_at IS NOT NULL AND ended_at < ?)", (ended_before,))
    cursor = db.execute("DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?",
                        (ended_before,))
    return cursor.rowcount


def probe(db: sqlite3.Connection, instance: str) -> None:
    """A write of a few bytes that still needs the disk: it appends a page to the log."""
    db.execute("INSERT OR REPLACE INTO probes (instance, probed_at) VALUES (?, ?)",
               (instance, time.time()))
