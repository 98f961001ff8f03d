"""The two databases a store can live in, behind the one interface its SQL needs.

The store's SQL is written once, in the common subset of SQLite and PostgreSQL (``?``
parameters, ``INSERT ... ON CONFLICT``, partial indexes); :class:`PgConnection` makes a
psycopg connection look like the ``sqlite3`` one the store was written against, so the
writer thread, its group commit and the reads are the same code for both. PostgreSQL is
reached with psycopg 3 in autocommit mode: the store issues ``BEGIN``/``COMMIT`` itself,
one transaction per batch, exactly as with SQLite. Reads stay blocking calls made in
worker threads (``asyncio.to_thread``) rather than psycopg's async API: the writer
thread needs a blocking connection anyway, and one design for both databases keeps the
event loop free of database calls either way.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from session_service.store_files import FileStore, root_of


class Db(Protocol):
    """What the store's SQL functions use of a connection."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def shown(location: str) -> str:
    """``location`` fit for logs: a URL's password is left out."""
    if not is_postgres(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class SqliteConnection(sqlite3.Connection):
    """An SQLite connection that knows where its large values go
    (:mod:`session_service.store_files`)."""

    files: FileStore | None = None


class PgConnection:
    """A psycopg connection with the ``sqlite3`` calls the store makes."""

    dialect = "postgresql"
    #: Every value stays in its row: the replicas sharing the database may be on other
    #: hosts, and TOAST keeps large values out of the table's pages already.
    files: FileStore | None = None

    def __init__(self, url: str) -> None:
        import psycopg  # only replicas configured for PostgreSQL need it

        self._errors = psycopg.Error
        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        sql = sql.replace("BEGIN IMMEDIATE", "BEGIN").replace("?", "%s")
        return self._conn.execute(sql, parameters)

    @property
    def in_transaction(self) -> bool:
        import psycopg.pq

        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self._conn.close()


def connect(location: str) -> Any:
    """A connection to ``location``: a PostgreSQL URL, else an SQLite path.

    SQLite: WAL (readers never wait for the writer, and several processes may write),
    ``synchronous = NORMAL`` and a busy timeout of 10 s, so that a replica waits for
    another's commit instead of failing. A new file gets :data:`PAGE_SIZE` pages, and
    large values go to files beside it.
    """
    if is_postgres(location):
        return PgConnection(location)
    db = sqlite3.connect(location, check_same_thread=False, isolation_level=None,
                         timeout=BUSY_TIMEOUT, factory=SqliteConnection)
    if location != ":memory:":
        db.files = FileStore(root_of(location))
        # Only a file not yet written takes it (and only before WAL): existing files keep
        # theirs until a VACUUM outside WAL.
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        _enter_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
    return db


BUSY_TIMEOUT = 10.0

#: Bytes per page of a new SQLite file. Results run to megabytes (screenshots), which
#: SQLite keeps in chains of overflow pages: 8 KiB pages cut the CPU of writing a 5 MB
#: result by about a quarter against the default 4 KiB (16.9 -> 12.4 ms: fewer pages to
#: chain, log and checkpoint). Small rows pay a little: a commit of 700 commands of 100
#: interleaved sessions costs 6.5 instead of 5.3 us per command (more bytes per dirty
#: page). 16 KiB pages cut big writes by a third and double the small ones.
PAGE_SIZE = 8192


def _enter_wal(db: sqlite3.Connection) -> None:
    """Switch ``db`` to WAL, waiting out replicas that open the same new file at once.

    Changing the journal mode needs the file to itself, and SQLite answers "database is
    locked" at once rather than through the busy handler while another connection holds a
    lock on a file still in rollback mode; so the switch is retried for the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def dialect(db: Any) -> str:
    return getattr(db, "dialect", "sqlite")
