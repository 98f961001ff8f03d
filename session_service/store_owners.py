"""Which users of a store file are alive, so a restart fails only orphaned sessions.

Several replicas on one machine may share a store file (the default path is relative to
the working directory). At startup a replica must mark as ended the sessions that were
running in a replica that died, but never those of a replica that is still running. Each
store user (an *instance*) therefore holds an exclusive ``flock`` on its own file in
``<store>.owners/``; the kernel drops the lock when the process dies, even on SIGKILL, so
"can I take this instance's lock?" answers "is it dead?" without heartbeats or clocks.
``flock`` locks belong to an open file description, so two stores in one process (tests)
are told apart too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

log = logging.getLogger("aip.session.store")


class OwnerLocks:
    """This instance's liveness lock, and the test of other instances' locks."""

    def __init__(self, store_path: str, instance: str) -> None:
        self.directory = f"{store_path}.owners"
        self.instance = instance
        self._fd: int | None = None

    def _path(self, instance: str) -> str:
        return os.path.join(self.directory, f"{instance}.lock")

    def acquire(self) -> None:
        """Hold our lock. The file is locked before it gets its visible name, so nobody
        can ever see it unlocked while we live."""
        os.makedirs(self.directory, exist_ok=True)
        hidden = os.path.join(self.directory, f".{self.instance}.tmp")
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self._path(self.instance))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path(self.instance))
        os.close(self._fd)
        self._fd = None

    def is_dead(self, instance: str) -> bool:
        """``True`` when ``instance`` no longer runs; its lock file is then removed."""
        if instance == self.instance:
            return False
        path = self._path(instance)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return True
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove lock files left by dead instances that had no running session."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name.endswith(".lock"):
                self.is_dead(name.removesuffix(".lock"))
