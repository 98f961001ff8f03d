"""Several replicas' stores on one SQLite file, then on one PostgreSQL database: the
unique key decides who owns an id, leases fail a dead replica's sessions exactly once,
every replica reads every session, pages are keyset pages, and migrations run once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aip_wire.vocab import CancelReason
from session_service import store_schema
from session_service.core.device_queue import FULL, GONE, RUN, Placement, QueueLimits, Verdict
from session_service.records import Claim, SessionRecord
from session_service.store import SessionStore
from session_service.store_reads import BadPageToken, Filters


def record(session_id: str, *, requester_id: str = "c1", replica_id: str = "r1",
           created_at: float | None = None, device_id: str = "dev1",
           task_name: str = "t") -> SessionRecord:
    return SessionRecord(
        session_id=session_id, task_name=task_name, request='{"steps": []}',
        device_id=device_id, requester_id=requester_id, requester_kind="backend",
        agent="plan", replica_id=replica_id, state="running",
        created_at=time.time() if created_at is None else created_at,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the replicas' shared store lives: a file, or a PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "shared.sqlite3")


@pytest.fixture
def stores(path: str) -> Iterator[list[SessionStore]]:
    opened = [SessionStore(path, f"r{n}", lease_ttl=0.5) for n in range(3)]
    for store in opened:
        store.open()
    try:
        yield opened
    finally:
        for store in opened:
            store.close()


def test_one_creation_wins_an_id_among_replicas(stores: list[SessionStore]) -> None:
    claims = [Claim() for _ in stores]
    barrier = threading.Barrier(len(stores))

    def create(n: int) -> None:
        barrier.wait()
        stores[n].record_started(record("same", requester_id=f"c{n}", replica_id=f"r{n}"),
                                 claim=claims[n])
        assert stores[n].flush()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [n for n, claim in enumerate(claims) if claim.winner is None]
    assert len(winners) == 1
    for claim in claims:
        if claim.winner is not None:
            assert claim.winner.requester_id == f"c{winners[0]}"
    for store in stores:  # every replica reads the one record
        got = store.get("same")
        assert got is not None and got.requester_id == f"c{winners[0]}"


def test_a_lapsed_lease_fails_its_sessions_once(stores: list[SessionStore],
                                                path: str) -> None:
    dead = SessionStore(path, "dead", lease_ttl=0.3)
    dead.open()
    dead.record_started(record("orphan", replica_id="dead"))
    dead.record_command("orphan", 0, "r-0", [], 1.0)
    dead.record_results("orphan", 0, [], 1.5, "answered")  # progress, seen by all
    dead.record_command("orphan", 1, "r-1", [], 2.0)
    assert dead.flush()
    got = stores[0].get("orphan")
    assert got is not None and got.state == "running" and got.steps_done == 1
    dead.close()  # a closed store renews nothing: as good as dead for its lease
    stores[0].renew_lease()
    assert stores[0].flush()
    assert stores[0].get("orphan").state == "running"  # type: ignore[union-attr]
    time.sleep(0.35)
    for store in stores:  # all reap together: one update changes the row
        store.renew_lease()
    for store in stores:
        assert store.flush()
    got = stores[2].get("orphan")
    assert got is not None and got.state == "failed"
    assert got.cancel_reason == CancelReason.REPLICA_LOST
    assert [c.status for c in got.commands] == ["answered", "unanswered"]
    assert got.steps_done == 1  # its progress, kept when it was reaped
    ended_at = got.ended_at
    stores[1].renew_lease()
    assert stores[1].flush()
    assert stores[1].get("orphan").ended_at == ended_at  # type: ignore[union-attr]
    assert sorted(lease.replica_id for lease in stores[0].replicas()) == ["r0", "r1", "r2"]


def test_live_leases_keep_their_sessions(stores: list[SessionStore]) -> None:
    stores[1].record_started(record("alive", replica_id="r1"))
    assert stores[1].flush()
    for _ in range(3):
        time.sleep(0.2)
        for store in stores:
            store.renew_lease()
        for store in stores:
            assert store.flush()
    assert stores[0].get("alive").state == "running"  # type: ignore[union-attr]


def test_an_end_after_a_reap_does_not_overwrite_it(stores: list[SessionStore]) -> None:
    stores[0].record_started(record("s", replica_id="r0"))
    assert stores[0].flush()
    stores[0].record_ended("s", state="completed", result=1, error=None, cancel_reason=None,
                           ended_at=1.0, steps_done=1, steps_total=1)
    stores[0].record_ended("s", state="failed", result=None, error="late",
                           cancel_reason=None, ended_at=2.0, steps_done=1, steps_total=1)
    assert stores[0].flush()
    assert stores[1].get("s").state == "completed"  # type: ignore[union-attr]


def test_keyset_pages_with_filters(stores: list[SessionStore]) -> None:
    for n in range(7):
        stores[n % 3].record_started(record(f"s{n}", replica_id=f"r{n % 3}", created_at=100.0
                                            + n // 2, device_id="d1" if n % 2 else "d2"))
    for store in stores:
        assert store.flush()
    seen: list[str] = []
    token = ""
    while True:
        page = stores[0].page(Filters(), 3, token)
        seen += [r.session_id for r in page.records]
        token = page.next_token
        if not token:
            break
    assert seen == ["s6", "s5", "s4", "s3", "s2", "s1", "s0"]
    page = stores[1].page(Filters(device_id="d1", state="running"), 10)
    assert [r.session_id for r in page.records] == ["s5", "s3", "s1"]
    assert page.next_token == ""
    assert stores[2].page(Filters(requester_id="nobody"), 10).records == []
    with pytest.raises(BadPageToken):
        stores[0].page(Filters(), 3, "not-a-token")


def test_migrations_run_once_and_upgrade_an_old_file(tmp_path: Path) -> None:
    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as db:  # a file of the version before schema_version
        db.executescript(store_schema.MIGRATIONS[0])
    db = sqlite3.connect(path, isolation_level=None)
    assert store_schema.migrate(db) == len(store_schema.MIGRATIONS)
    assert store_schema.migrate(db) == 0
    assert store_schema.version(db) == len(store_schema.MIGRATIONS)
    db.close()


def test_migrations_run_once_among_replicas_starting_together(path: str) -> None:
    stores = [SessionStore(path, f"m{n}") for n in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: SessionStore) -> None:
        barrier.wait()
        try:
            store.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        versions = stores[0]._connection().execute(
            "SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [row[0] for row in versions] == list(range(1, len(store_schema.MIGRATIONS) + 1))
    finally:
        for store in stores:
            store.close()


async def _poll(store: SessionStore, session_ids: list[str]) -> dict[str, Placement] | None:
    answered: asyncio.Future[dict[str, Placement] | None] = \
        asyncio.get_running_loop().create_future()
    store.poll_slots(session_ids, answered.set_result)
    async with asyncio.timeout(10):
        return await answered


async def test_the_devices_queues_are_shared_by_the_stores(stores: list[SessionStore],
                                                           path: str) -> None:
    """One session runs per device whichever store created it; the next ones wait in
    order, one more than the queue holds is refused and never recorded; an end, or the
    reaping of a dead replica, lets the next in line run."""
    for store in stores:
        store.limits = QueueLimits(max_running=1, max_queued=2)
    dead = SessionStore(path, "dead", lease_ttl=0.3, limits=QueueLimits(1, 2))
    dead.open()
    claims = {name: Claim() for name in ("a", "b", "c", "d", "other")}
    dead.record_started(record("a", replica_id="dead"), claim=claims["a"])
    assert dead.flush()
    for n, name in ((1, "b"), (2, "c"), (0, "d")):  # in this order: one at a time
        stores[n].record_started(record(name, replica_id=f"r{n}"), claim=claims[name])
        assert stores[n].flush()
    stores[0].record_started(record("other", replica_id="r0", device_id="dev2"),
                             claim=claims["other"])
    assert stores[0].flush()
    assert claims["a"].placement == RUN and claims["other"].placement == RUN
    assert claims["b"].placement == Placement(Verdict.WAIT, 1)
    assert claims["c"].placement == Placement(Verdict.WAIT, 2)
    assert claims["d"].placement == FULL and stores[0].get("d") is None
    queued = stores[0].get("c")
    assert queued is not None and (queued.state, queued.queue_position) == ("queued", 2)
    assert stores[0].live_elsewhere() == {"dev1": (1, 2)}  # r1's, r2's and the dead one's

    assert await _poll(stores[2], ["c"]) == {"c": Placement(Verdict.WAIT, 2)}
    dead.close()  # it dies holding the device: its lease lapses, its ticket is reaped
    await asyncio.sleep(0.35)
    stores[0].renew_lease()
    assert stores[0].flush()
    assert await _poll(stores[2], ["c"]) == {"c": Placement(Verdict.WAIT, 2)}  # b is older
    assert await _poll(stores[1], ["b"]) == {"b": RUN}
    assert stores[2].get("b").state == "running"  # type: ignore[union-attr]
    assert await _poll(stores[2], ["c"]) == {"c": Placement(Verdict.WAIT, 1)}
    stores[1].record_ended("b", state="completed", result=None, error=None,
                           cancel_reason=None, ended_at=time.time(), steps_done=0,
                           steps_total=0)
    assert stores[1].flush()
    assert await _poll(stores[2], ["c", "gone"]) == {"c": RUN, "gone": GONE}
