"""Session records in SQLite: what survives the requester, the replica and a restart.

Writes never touch the disk on the event loop: ``record_*`` only put an operation on a
queue, and one writer thread applies everything queued so far in a single transaction.
A command therefore costs the loop a queue put, however slow the disk. The writer waits
``commit_interval`` after the first write of a batch so that a busy replica commits a few
times a second rather than once per command: each wake-up of that thread takes the GIL
from the event loop, which showed as a third of the replica's CPU in profiles of a
single session's round trips. Reads (a session no longer in memory) are blocking and
meant for ``asyncio.to_thread``. A failing write is logged and counted; it never reaches
a session. The ``record_*`` methods are the manager's
:class:`~session_service.core.ports.RecordSink`.

At :meth:`SessionStore.open`, sessions still ``running`` in the file whose replica is dead
(see :mod:`session_service.store_owners`) are marked ``failed`` with the cancel reason
``replica_restarted``: nothing will ever end them otherwise.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aip_wire.frames import dumps
from aip_wire.vocab import CancelReason
from session_service import metrics
from session_service.records import CommandRecord, SessionRecord
from session_service.store_owners import OwnerLocks

log = logging.getLogger("aip.session.store")

MEMORY = ":memory:"
#: Most queued operations applied in one transaction.
MAX_BATCH = 1000

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
PRAGMA user_version = 1;
"""


_COLUMNS = ("session_id, task_name, request, device_id, requester_id, requester_kind, agent, "
            "replica_id, state, created_at, result_json, error, cancel_reason, ended_at, "
            "steps_done, steps_total")

Op = tuple[Callable[..., None], tuple[Any, ...]]


class SessionStore:
    """The records of one replica in one SQLite file (or ``:memory:``).

    Thread model: the writer thread owns the writes; readers run in worker threads. Both
    use one connection under one lock, so ``:memory:`` works the same as a file and a
    read sees every batch either whole or not at all.
    """

    def __init__(self, path: str, replica_id: str, commit_interval: float = 0.0) -> None:
        self.path = path
        self.replica_id = replica_id
        self.commit_interval = commit_interval
        self.instance = uuid.uuid4().hex
        self._owners = None if path == MEMORY else OwnerLocks(path, self.instance)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> int:
        """Create the schema, take ownership, end orphaned sessions; blocking.

        :returns: how many orphaned sessions were marked ended.
        """
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                             timeout=10.0)
        if self.path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(SCHEMA)
        self._db = db
        recovered = 0
        if self._owners is not None:
            self._owners.acquire()
            recovered = self._recover(self._owners)
            self._owners.sweep()
        self._writer = threading.Thread(target=self._write_loop, name="aip-session-store",
                                        daemon=True)
        self._writer.start()
        return recovered

    def _recover(self, owners: OwnerLocks) -> int:
        assert self._db is not None
        with self._lock:
            instances = [row[0] for row in self._db.execute(
                "SELECT DISTINCT instance FROM sessions WHERE state = 'running'")]
        dead = [instance for instance in instances if owners.is_dead(instance)]
        recovered = 0
        now = time.time()
        with self._lock:
            for instance in dead:
                cursor = self._db.execute(
                    "UPDATE sessions SET state = 'failed', cancel_reason = ?, error = ?, "
                    "ended_at = ? WHERE instance = ? AND state = 'running'",
                    (CancelReason.REPLICA_RESTARTED,
                     f"Session cancelled: {CancelReason.REPLICA_RESTARTED} (the replica running it "
                     "stopped before it ended)", now, instance),
                )
                self._db.execute(
                    "UPDATE commands SET status = 'unanswered' WHERE status = 'sent' AND "
                    "session_id IN (SELECT session_id FROM sessions WHERE instance = ?)",
                    (instance,),
                )
                recovered += cursor.rowcount
        if recovered:
            log.warning("%d session(s) left running by a dead replica marked failed (%s)",
                        recovered, CancelReason.REPLICA_RESTARTED)
        return recovered

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed; blocking."""
        if self._writer is None or not self._writer.is_alive():
            return False
        done = threading.Event()
        self._queue.put((_after_commit, (done.set,)))
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer, release the file; blocking."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.error("store writer did not finish within %gs", timeout)
            self._writer = None
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
        if self._owners is not None:
            self._owners.release()

    # ------------------------------------------------------------------ writes (queued)

    def record_started(self, record: SessionRecord) -> None:
        self._queue.put((_insert_session, (record, self.instance)))

    def record_command(self, session_id: str, seq: int, response_id: str, actions: Any,
                       sent_at: float) -> None:
        self._queue.put((_insert_command, (session_id, seq, response_id, actions, sent_at)))

    def record_results(self, session_id: str, seq: int, results: Any, received_at: float,
                       status: str) -> None:
        self._queue.put((_update_command, (session_id, seq, results, received_at, status)))

    def record_ended(self, session_id: str, *, state: str, result: Any, error: str | None,
                     cancel_reason: str | None, ended_at: float, steps_done: int,
                     steps_total: int) -> None:
        self._queue.put((_end_session, (session_id, state, result, error, cancel_reason,
                                        ended_at, steps_done, steps_total)))

    def prune(self, ended_before: float) -> None:
        """Forget sessions (and their commands) that ended before ``ended_before``."""
        self._queue.put((_prune, (ended_before,)))

    def _write_loop(self) -> None:
        stopping = False
        backlog = False
        while not stopping:
            batch: list[Op] = []
            item = self._queue.get()
            if item is not None and self.commit_interval > 0 and not backlog:
                time.sleep(self.commit_interval)
            while item is not None:
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            backlog = len(batch) >= MAX_BATCH  # more is waiting: no pause before it
            if batch:
                self._apply(batch)

    def _apply(self, batch: list[Op]) -> None:
        db = self._db
        assert db is not None
        writes = [op for op in batch if op[0] is not _after_commit]
        with self._lock:
            try:
                db.execute("BEGIN")
                for function, args in writes:
                    function(db, *args)
                db.execute("COMMIT")
                writes = []
            except Exception:
                _rollback(db)
                log.exception("store batch of %d failed; retrying one by one", len(writes))
            for function, args in writes:
                try:
                    db.execute("BEGIN")
                    function(db, *args)
                    db.execute("COMMIT")
                except Exception:
                    _rollback(db)
                    metrics.STORE_ERRORS.inc()
                    log.exception("store write %s dropped", function.__name__)
        for function, args in batch:
            if function is _after_commit:
                args[0]()

    # ------------------------------------------------------------------ reads (blocking)

    def get(self, session_id: str, with_commands: bool = True) -> SessionRecord | None:
        return self._one("session_id = ?", (session_id,), with_commands)

    def find_by_task_name(self, task_name: str,
                          with_commands: bool = True) -> SessionRecord | None:
        """The latest session with that task name."""
        return self._one("task_name = ?", (task_name,), with_commands)

    def list(self, device_id: str = "", running_only: bool = False, limit: int = 100,
             replica_id: str | None = None) -> list[SessionRecord]:
        """Newest first, without commands; ``replica_id`` keeps one replica's sessions."""
        where, args = ["1"], []
        if device_id:
            where.append("device_id = ?")
            args.append(device_id)
        if running_only:
            where.append("state = 'running'")
        if replica_id is not None:
            where.append("replica_id = ?")
            args.append(replica_id)
        sql = (f"SELECT {_COLUMNS} FROM sessions WHERE {' AND '.join(where)} "
               "ORDER BY created_at DESC LIMIT ?")
        with self._lock:
            rows = self._connection().execute(sql, (*args, limit)).fetchall()
        return [SessionRecord(*row) for row in rows]

    def _one(self, where: str, args: tuple[Any, ...],
             with_commands: bool) -> SessionRecord | None:
        with self._lock:
            db = self._connection()
            row = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE {where} "
                             "ORDER BY created_at DESC LIMIT 1", args).fetchone()
            if row is None:
                return None
            record = SessionRecord(*row)
            if with_commands:
                record.commands = [CommandRecord(*command) for command in db.execute(
                    "SELECT seq, response_id, actions_json, sent_at, status, results_json, "
                    "received_at FROM commands WHERE session_id = ? ORDER BY seq",
                    (record.session_id,),
                )]
        return record

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the session store is not open")
        return self._db


# ---------------------------------------------------------------------- write operations
# Each runs in the writer thread, inside the batch's transaction.


def _json(value: Any) -> str:
    return dumps(value).decode()


def _after_commit(callback: Callable[[], None]) -> None:
    """A marker, not a write: the writer calls ``callback`` once the batch is committed."""
    callback()


def _rollback(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("store rollback failed")


def _insert_session(db: sqlite3.Connection, record: SessionRecord, instance: str) -> None:
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


def _insert_command(db: sqlite3.Connection, session_id: str, seq: int, response_id: str,
                    actions: Any, sent_at: float) -> None:
    db.execute(
        "INSERT OR REPLACE INTO commands (session_id, seq, response_id, actions_json, "
        "sent_at, status) VALUES (?, ?, ?, ?, ?, 'sent')",
        (session_id, seq, response_id, _json(actions), sent_at),
    )


def _update_command(db: sqlite3.Connection, session_id: str, seq: int, results: Any,
                    received_at: float, status: str) -> None:
    db.execute(
        "UPDATE commands SET results_json = ?, received_at = ?, status = ? "
        "WHERE session_id = ? AND seq = ?",
        (_json(results), received_at, status, session_id, seq),
    )


def _end_session(db: sqlite3.Connection, session_id: str, state: str, result: Any,
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


def _prune(db: sqlite3.Connection, ended_before: float) -> None:
    db.execute("DELETE FROM commands WHERE session_id IN (SELECT session_id FROM sessions "
               "WHERE ended_at IS NOT NULL AND ended_at < ?)", (ended_before,))
    cursor = db.execute("DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?",
                        (ended_before,))
    if cursor.rowcount:
        log.info("pruned %d session record(s)", cursor.rowcount)
