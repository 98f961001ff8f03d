"""A real PostgreSQL server for the tests, in a temporary directory, on loopback.

Started once per test session with ``initdb`` and ``pg_ctl`` from the PATH or
``/usr/lib/postgresql/*/bin``; each test gets a fresh database on it. PostgreSQL refuses
to run as root, so as root (CI) the server runs as the unprivileged ``postgres`` user
(Debian's package creates it) through ``runuser``, in a directory that user owns.

Without PostgreSQL binaries the tests that need it are skipped, unless
``AIP_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port

USER = "aip"


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or ``None``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return Path(directory)
    return None


def required() -> bool:
    return os.environ.get("AIP_REQUIRE_POSTGRES") == "1"


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def server() -> Iterator[str]:
    """Run a server; yields the URL of its maintenance database ``postgres``."""
    bindir = binaries()
    assert bindir is not None, "no PostgreSQL binaries"
    root = Path(tempfile.mkdtemp(prefix="aip-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", USER,
                                        "-A", "trust", "--no-sync"]), **run)  # type: ignore[call-overload]
        options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o",
                                        options, "-l", str(root / "log"), "-w", "start"]),
                       **run)  # type: ignore[call-overload]
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_database(maintenance_url: str) -> str:
    """A fresh empty database on the server; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(maintenance_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return maintenance_url.rsplit("/", 1)[0] + f"/{name}"
