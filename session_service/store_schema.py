"""The store's schema as numbered migrations, applied at start by whichever replica
comes first.

Plain versioned SQL rather than a migration framework: the schema is a few tables that
every replica creates itself at start, there is no operator step to run, and a
framework's runtime would be one more dependency in every replica for a dozen
statements. ``schema_version`` holds the versions applied; :func:`migrate` applies the
missing ones in one transaction under a lock (SQLite: ``BEGIN IMMEDIATE`` takes the
write lock first; PostgreSQL: a transaction-scoped advisory lock), so that replicas
starting together apply each migration exactly once and none sees a half-migrated
schema. The SQL is written for SQLite; :func:`for_dialect` adapts its two differences
for PostgreSQL (``REAL`` is a 4-byte float there; ``WITHOUT ROWID`` does not exist).

Files written before ``schema_version`` existed hold version 1's tables already; its
statements are idempotent (``IF NOT EXISTS``), so they are recorded as applied as well.
"""

from __future__ import annotations

import re
import time

from session_service.store_db import Db, dialect

#: Migration ``n`` (1-based) is ``MIGRATIONS[n - 1]``; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    # 1: sessions and their command logs.
    """
    CREATE TABLE IF NOT EXISTS sessions (
        session_id     TEXT PRIMARY KEY,  -- unique: the store decides who owns an id
        task_name      TEXT NOT NULL,
        request        TEXT NOT NULL,
        device_id      TEXT NOT NULL,
        requester_id   TEXT NOT NULL,
        requester_kind TEXT NOT NULL,     -- device, constellation, http, backend
        agent          TEXT NOT NULL,
        replica_id     TEXT NOT NULL,     -- the replica that ran it
        instance       TEXT NOT NULL,     -- the store user that ran it (its lease)
        state          TEXT NOT NULL,     -- running, completed, failed, cancelled
        result_json    TEXT,
        error          TEXT,
        cancel_reason  TEXT,
        steps_done     INTEGER NOT NULL DEFAULT 0,
        steps_total    INTEGER NOT NULL DEFAULT 0,
        created_at     REAL NOT NULL,     -- seconds since the epoch
        ended_at       REAL
    );
    CREATE INDEX IF NOT EXISTS sessions_by_task_name ON sessions (task_name, created_at);
    CREATE INDEX IF NOT EXISTS sessions_by_created ON sessions (created_at);
    CREATE INDEX IF NOT EXISTS sessions_by_ended ON sessions (ended_at);
    CREATE INDEX IF NOT EXISTS sessions_running ON sessions (instance)
        WHERE state = 'running';
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
    """,
    # 2: the replicas' leases: who is alive, and where to reach it.
    """
    CREATE TABLE replicas (
        instance      TEXT PRIMARY KEY,   -- one process's use of the store
        replica_id    TEXT NOT NULL,
        address       TEXT NOT NULL,      -- --advertise-address: where to forward calls
        lease_expires REAL NOT NULL       -- seconds since the epoch
    ) WITHOUT ROWID;
    """,
    # 3: StartSession's idempotency keys, unique per requester on every replica.
    """
    ALTER TABLE sessions ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX sessions_by_idempotency_key
        ON sessions (requester_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    """,
    # 4: the language-model agent's transcript, one row per model turn.
    """
    CREATE TABLE model_turns (
        session_id TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        turn_json  TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    """,
    # 5: the devices' queues (one ticket per live session) and the queued state.
    """
    CREATE TABLE device_slots (
        session_id TEXT PRIMARY KEY,
        device_id  TEXT NOT NULL,
        instance   TEXT NOT NULL,     -- the store user whose session holds it
        ticket     INTEGER NOT NULL,  -- its place in the device's line: 1, 2, ...
        running    INTEGER NOT NULL   -- 1: it holds one of the device's slots
    ) WITHOUT ROWID;
    CREATE INDEX device_slots_by_device ON device_slots (device_id, running, ticket);
    CREATE INDEX sessions_live ON sessions (instance) WHERE state IN ('queued', 'running');
    """,
    # 6: large values in files beside an SQLite store (session_service.store_files); a
    # row naming a file holds NULL in the value's own column.
    """
    ALTER TABLE commands ADD COLUMN results_file TEXT;
    ALTER TABLE sessions ADD COLUMN result_file TEXT;
    """,
)


#: The advisory lock key of migrations in PostgreSQL (any constant, the same for all).
MIGRATION_LOCK = 0x41495053  # "AIPS"


def for_dialect(script: str, name: str) -> str:
    if name != "postgresql":
        return script
    script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script)
    return script.replace("WITHOUT ROWID", "")


def version(db: Db) -> int:
    """The highest migration applied (0 for a new file)."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
               "applied_at DOUBLE PRECISION NOT NULL)")
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: Db) -> int:
    """Apply the missing migrations under the lock; returns how many.

    ``db`` is in autocommit mode and waits (SQLite: its busy timeout) while another
    replica migrates.
    """
    name = dialect(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        if name == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        applied = version(db)
        for number in range(applied + 1, len(MIGRATIONS) + 1):
            for statement in _statements(for_dialect(MIGRATIONS[number - 1], name)):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                       (number, time.time()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS) - applied


def _statements(script: str) -> list[str]:
    """The statements of a migration (they contain no ``;`` but their separators)."""
    parts = (re.sub(r"--[^\n]*", "", part).strip() for part in script.split(";"))
    return [part for part in parts if part]
