"""Session records in SQLite: what survives the requester, the replica and a restart.

Writes never touch the disk on the event loop: ``record_*`` only put an operation on a
queue, and one writer thread applies everything queued so far in a single transaction.
A command therefore costs the loop a queue put, however slow the disk. The writer waits
``commit_interval`` after the first write of a batch so that a busy replica commits a few
times a second rather than once per command: each wake-up of that thread takes the GIL
from the event loop, which showed as a third of the replica's CPU in profiles of a
single session's round trips.

A write may carry a ``written`` callback, called on the event loop that queued it with
``True`` once committed or ``False`` once failed (one loop wake-up per batch). A creation
with a callback is urgent and cuts the commit interval short: its requester's ack waits
on it, and should not wait 50 ms on an idle replica; under load, creations queued while
a batch commits share the next commit (group commit). Committed means in the SQLite log
with ``synchronous = NORMAL``: it survives the process killed, not the machine's power.

Failed writes are dropped and counted, never retried: nothing waits on them, and a
backlog kept for a disk that may not come back is memory without bound. The writes'
health (:mod:`session_service.store_health`) is logged once per failure episode, shown
in metrics and handed to ``on_health`` (the replica's health); while writes fail, the
writer probes the disk every ``probe_interval`` so health returns without traffic.

Every replica may share one store: replicas on one host share one file (WAL, a busy
timeout, transactions that take the write lock at ``BEGIN IMMEDIATE``). The store is the
arbiter of session ids: a creation is an insert that does nothing when the id is taken,
and its callback learns the holder through a :class:`~session_service.records.Claim`.
Each replica holds a lease in the store (:mod:`session_service.leases`), renewed through
the writer; as it renews, it fails the running sessions of replicas whose lease lapsed.

Reads are blocking and meant for ``asyncio.to_thread`` (:mod:`session_service.
store_reads`). The ``record_*`` methods are the manager's :class:`~session_service.core.
ports.RecordSink`. At :meth:`SessionStore.open`, sessions still ``running`` in the file
whose replica is dead (see :mod:`session_service.store_owners`) are marked ``failed``
with the cancel reason ``replica_restarted`` at once, without waiting for their lease.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aip_runtime.throttled_log import Throttled
from aip_wire.vocab import CancelReason
from session_service import (
    leases,
    metrics,
    store_db,
    store_fold,
    store_reads,
    store_schema,
    store_slots,
    store_sql,
)
from session_service.core.device_queue import Placement, QueueLimits
from session_service.core.log_budget import approx_bytes
from session_service.records import Claim, SessionRecord
from session_service.store_backlog import Backlog, elided
from session_service.store_health import Report, WriteHealth
from session_service.store_owners import OwnerLocks

log = logging.getLogger("aip.session.store")

#: Default bound of :attr:`SessionStore.backlog` (``--store-backlog-bytes``).
DEFAULT_BACKLOG_BYTES = 256 * 1024 * 1024
_elided_log = Throttled(log, logging.WARNING, "results of session %s (%d bytes) recorded "
                        "elided: the write backlog is over %d bytes (the disk is slower "
                        "than results arrive)")

MEMORY = ":memory:"
#: Most queued operations applied in one transaction.
MAX_BATCH = 1000
#: Seconds between probes of a store whose writes fail.
PROBE_INTERVAL = 1.0

Written = Callable[[bool], None]


@dataclass(slots=True)
class Write:
    """One queued operation: ``function(db, *args)``, and whom to tell of its outcome."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    written: Written | None = None
    loop: asyncio.AbstractEventLoop | None = None
    #: Bytes of results it holds, counted in the store's :class:`Backlog`.
    size: int = 0


class SessionStore:
    """The records of every replica sharing one SQLite file (or ``:memory:``). The writer
    thread owns the writes; readers run in worker threads. Both use one connection under
    one lock, so ``:memory:`` works the same as a file and a read sees every batch of
    this process either whole or not at all.
    """

    def __init__(self, path: str, replica_id: str, commit_interval: float = 0.0,
                 probe_interval: float = PROBE_INTERVAL, address: str = "",
                 lease_ttl: float = leases.TTL,
                 backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
                 limits: QueueLimits | None = None) -> None:
        self.path = path
        #: The devices' queues' limits (none given: no limit, nothing waits); every
        #: replica sharing the store shares the lines.
        self.limits = limits if limits is not None else QueueLimits(max_running=0)
        #: Results queued and not yet written, in bytes; over the bound, results are
        #: recorded elided (:mod:`session_service.store_backlog`).
        self.backlog = Backlog(backlog_bytes)
        self.replica_id = replica_id
        #: Where other replicas reach this one (its lease row says so).
        self.address = address
        self.lease_ttl = lease_ttl
        self.commit_interval = commit_interval
        self.probe_interval = probe_interval
        self.instance = uuid.uuid4().hex
        self.health = WriteHealth()
        #: Called on its loop with the new health when writes start or stop failing.
        self.on_health: Callable[[bool], None] | None = None
        self._health_loop: asyncio.AbstractEventLoop | None = None
        # Liveness by flock for replicas sharing a file on one host; leases do it for all.
        self._owners = None if path == MEMORY or store_db.is_postgres(path) \
            else OwnerLocks(path, self.instance)
        self._db: Any = None
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._writer: threading.Thread | None = None
        metrics.STORE_HEALTHY.set(1)

    @property
    def writable(self) -> bool:
        """Whether the last batch (or probe) could write; read from any thread."""
        return self.health.ok

    def watch_health(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(ok)`` on the running loop whenever the write health changes."""
        self._health_loop = asyncio.get_running_loop()
        self.on_health = callback

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> int:
        """Create the schema, take ownership, end orphaned sessions; blocking.

        :returns: how many orphaned sessions were marked ended.
        """
        db = store_db.connect(self.path)
        store_schema.migrate(db)
        self._db = db
        recovered = 0
        if self._owners is not None:  # first: a dead neighbour's reason is precise
            self._owners.acquire()
            recovered = self._recover(self._owners)
            self._owners.sweep()
        now = time.time()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            store_sql.renew_lease(db, self.instance, self.replica_id, self.address,
                                  leases.expiry(now, self.lease_ttl), now)
            db.execute("COMMIT")
        self._writer = threading.Thread(target=self._write_loop, name="aip-session-store",
                                        daemon=True)
        self._writer.start()
        return recovered

    def _recover(self, owners: OwnerLocks) -> int:
        assert self._db is not None
        with self._lock:
            instances = [row[0] for row in self._db.execute(
                f"SELECT DISTINCT instance FROM sessions WHERE {store_sql.LIVE}")]
        dead = [instance for instance in instances if owners.is_dead(instance)]
        if not dead:
            return 0
        with self._lock:
            return store_sql.fail_orphans(self._db, time.time(), CancelReason.REPLICA_RESTARTED,
                                          "the replica running it stopped", dead)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed; blocking."""
        if self._writer is None or not self._writer.is_alive():
            return False
        done = threading.Event()
        self._queue.put(Write(_after_commit, (done.set,)))
        self._urgent.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer, release the file; blocking."""
        if self._writer is not None:
            self._queue.put(None)
            self._urgent.set()
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

    def _put(self, write: Write, urgent: bool = False) -> None:
        if write.written is not None:
            write.loop = asyncio.get_running_loop()
        self._queue.put(write)
        if urgent:
            self._urgent.set()

    def record_started(self, record: SessionRecord, written: Written | None = None,
                       claim: Claim | None = None) -> None:
        """Queue a session's creation; ``written`` makes it urgent (an ack waits on it).
        ``claim`` learns, before ``written`` runs, whether the id was taken already, and
        where the session stands in its device's line."""
        self._put(Write(store_sql.claim_session,
                        (record, self.instance, claim if claim is not None else Claim(),
                         self.limits), written), urgent=written is not None)

    def poll_slots(self, session_ids: builtins.list[str],
                   done: Callable[[dict[str, Placement] | None], None]) -> None:
        """Start what may start among this replica's waiting sessions; ``done`` gets
        where each stands (``None`` when the store could not answer)."""
        answers: dict[str, Placement] = {}
        self._put(Write(_poll_into, (session_ids, self.limits, answers),
                        lambda ok: done(answers if ok else None)), urgent=True)

    def release_slot(self, session_id: str, written: Written | None = None) -> None:
        """Give back a session's ticket (again: its end's write failed)."""
        self._put(Write(store_slots.release, (session_id,), written))

    def renew_lease(self) -> None:
        """Queue this replica's lease renewal (and the reaping of lapsed ones)."""
        now = time.time()
        self._put(Write(store_sql.renew_lease, (self.instance, self.replica_id, self.address,
                                                leases.expiry(now, self.lease_ttl), now)),
                  urgent=True)

    def record_command(self, session_id: str, seq: int, response_id: str, actions: Any,
                       sent_at: float) -> None:
        self._put(Write(store_sql.insert_command,
                        (session_id, seq, response_id, actions, sent_at)))

    def record_results(self, session_id: str, seq: int, results: Any, received_at: float,
                       status: str, size: int = 0) -> None:
        """Queue a command's results (``size``: about their bytes, when known); elided
        when the backlog is full, rather than held in memory without bound."""
        size = size or approx_bytes(results)
        if not self.backlog.admit(size):
            metrics.STORE_ELIDED.inc()
            _elided_log.note(session_id, size, self.backlog.limit)
            results, size = elided(results, size), 0
        self._put(Write(store_sql.update_command,
                        (session_id, seq, results, received_at, status), size=size))

    def record_turn(self, session_id: str, seq: int, turn: Any, at: float) -> None:
        """Queue one model turn of the session's transcript."""
        self._put(Write(store_sql.insert_turn, (session_id, seq, turn, at)))

    def record_ended(self, session_id: str, *, state: str, result: Any, error: str | None,
                     cancel_reason: str | None, ended_at: float, steps_done: int,
                     steps_total: int, written: Written | None = None) -> None:
        """Queue a session's end; ``written`` is told once it is settled (not urgent)."""
        self._put(Write(store_sql.end_session, (session_id, state, result, error,
                                                cancel_reason, ended_at, steps_done,
                                                steps_total), written))

    def prune(self, ended_before: float) -> None:
        """Forget sessions (and their commands) that ended before ``ended_before``."""
        self._put(Write(_prune, (ended_before,)))

    # ------------------------------------------------------------------ the writer

    def _write_loop(self) -> None:
        stopping = False
        backlog = False
        while not stopping:
            try:
                item = self._queue.get(
                    timeout=None if self.health.ok else self.probe_interval)
            except queue.Empty:
                self._apply([Write(store_sql.probe, (self.instance,))])
                continue
            if item is not None and self.commit_interval > 0 and not backlog:
                self._urgent.wait(self.commit_interval)
            self._urgent.clear()
            batch: list[Write] = []
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

    def _apply(self, batch: list[Write]) -> None:
        db = self._db
        assert db is not None
        # Sizes from the writes as queued: a folded write counts none of its results.
        queued_bytes = sum(write.size for write in batch)
        writes = store_fold.fold([write for write in batch if write.function is not
                                  _after_commit], Write)
        failed: list[Write] = []
        error = ""
        with self._lock:
            try:
                db.execute("BEGIN IMMEDIATE")  # the write lock now, not at the first write
                for write in writes:
                    write.function(db, *write.args)
                db.execute("COMMIT")
                retry: list[Write] = []
            except Exception as exc:
                _rollback(db)
                error = repr(exc)
                retry = writes
            # One by one, so that one bad write does not take the batch with it.
            for write in retry:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    write.function(db, *write.args)
                    db.execute("COMMIT")
                except Exception as exc:
                    _rollback(db)
                    failed.append(write)
                    error = repr(exc)
        if writes:
            self._judge(len(writes) - len(failed), failed, error)
        self.backlog.written(queued_bytes)
        self._tell(batch, failed)

    def _judge(self, written: int, failed: list[Write], error: str) -> None:
        """Count, log and signal the outcome of a batch, as the health rules say."""
        health, now = self.health, time.monotonic()
        if failed and failed[0].function is store_sql.probe:
            report = health.probe_failed(now)
        else:
            metrics.STORE_WRITE_ERRORS.inc(len(failed))
            report = health.batch_done(written, len(failed), now, error)
        if report is Report.NONE:
            return
        names = ", ".join(sorted({write.function.__name__ for write in failed}))
        log.error("%s", health.message(report, store_db.shown(self.path), names, error, now))
        if report in (Report.FAILING, Report.RECOVERED):
            metrics.STORE_HEALTHY.set(1 if health.ok else 0)
            self._call_on_loop(self._health_loop, self._signal_health, health.ok)

    def _signal_health(self, ok: bool) -> None:
        if self.on_health is not None:
            self.on_health(ok)

    def _tell(self, batch: list[Write], failed: list[Write]) -> None:
        """Hand every outcome to its loop: one wake-up per loop and batch."""
        lost = {id(write) for write in failed}
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Written, bool]]] = {}
        for write in batch:
            if write.function is _after_commit:
                write.args[0]()
            elif write.written is not None and write.loop is not None:
                by_loop.setdefault(write.loop, []).append(
                    (write.written, id(write) not in lost))
        for loop, outcomes in by_loop.items():
            self._call_on_loop(loop, _call_all, outcomes)

    @staticmethod
    def _call_on_loop(loop: asyncio.AbstractEventLoop | None, function: Callable[..., None],
                      *args: Any) -> None:
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(function, *args)

    # ------------------------------------------------------------------ reads (blocking)

    def get(self, session_id: str, with_commands: bool = True) -> SessionRecord | None:
        """The session's record, whichever replica ran it (or runs it: its progress so
        far)."""
        with self._lock:
            return store_reads.one(self._connection(), "session_id = ?", (session_id,),
                                   with_commands)

    def find_by_task_name(self, task_name: str,
                          with_commands: bool = True) -> SessionRecord | None:
        """The latest session with that task name."""
        with self._lock:
            return store_reads.one(self._connection(), "task_name = ?", (task_name,),
                                   with_commands)

    def list(self, device_id: str = "", running_only: bool = False, limit: int = 100,
             replica_id: str | None = None) -> list[SessionRecord]:
        """Newest first, without commands; ``replica_id`` keeps one replica's sessions."""
        with self._lock:
            return store_reads.newest(self._connection(), device_id, running_only, limit,
                                      replica_id)

    def page(self, filters: store_reads.Filters, page_size: int = 100,
             page_token: str = "") -> store_reads.Page:
        """A page of every replica's sessions (see :func:`~session_service.store_reads.
        page`); raises :class:`~session_service.store_reads.BadPageToken`."""
        with self._lock:
            return store_reads.page(self._connection(), filters, page_size, page_token)

    def live_elsewhere(self) -> dict[str, tuple[int, int]]:
        """``(running, queued)`` sessions per device in the other replicas (this one
        counts its own)."""
        with self._lock:
            return store_reads.live_by_device(self._connection(), self.replica_id)

    def replicas(self) -> builtins.list[store_reads.Lease]:
        """Every replica with a lease: where to reach it, and until when."""
        with self._lock:
            return store_reads.lease_rows(self._connection())

    def _connection(self) -> Any:
        if self._db is None:
            raise RuntimeError("the session store is not open")
        return self._db


def _after_commit(callback: Callable[[], None]) -> None:
    """A marker, not a write: the writer calls ``callback`` once the batch is committed."""
    callback()


def _call_all(outcomes: list[tuple[Written, bool]]) -> None:
    for written, ok in outcomes:
        try:
            written(ok)
        except Exception:
            log.exception("a store write's callback failed")


def _poll_into(db: store_db.Db, session_ids: builtins.list[str], limits: QueueLimits,
               answers: dict[str, Placement]) -> None:
    answers.clear()  # a batch that failed is applied again, write by write
    answers.update(store_slots.poll(db, session_ids, limits))


def _prune(db: store_db.Db, ended_before: float) -> None:
    pruned = store_sql.prune(db, ended_before)
    if pruned:
        log.info("pruned %d session record(s)", pruned)


def _rollback(db: Any) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except Exception:
        log.debug("store rollback failed", exc_info=True)
