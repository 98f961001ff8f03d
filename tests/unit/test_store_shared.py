"""Several replicas' stores on one SQLite file, then on one PostgreSQL database: the
unique key decides who owns an id, leases fail a dead replica's sessions exactly once,
every replica reads every session, pages are keyset pages, and migrations run once."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aip_wire.vocab import CancelReason
from session_service import store_schema
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
