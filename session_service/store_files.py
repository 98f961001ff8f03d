"""Large values of an SQLite store, kept in files beside the database.

Results run to megabytes (screenshots travel inline as base64). In SQLite such a value is
a chain of overflow pages that is written twice, into the log and again when the log is
checkpointed into the database: inserting and committing one 5 MB row takes about 25 ms
of CPU, writing the same bytes to a file 1 to 3 ms, and the writer thread was three
quarters of a replica's samples under a stream of 5 MB results. So a value of at least
:data:`SPILL_BYTES` goes to a file under ``<database>-files/`` and its row names the file
instead (``results_file``, ``result_file``); reads put the text back, and callers see the
same record either way. PostgreSQL and ``:memory:`` stores keep every value in its row:
replicas on several hosts share the former, and the latter has no place for files.

Each session has a directory, named by a hash of its id (ids are any text), holding
``c<seq>.json`` per command and ``result.json``; pruning a session removes it. A file is
written whole under a temporary name and renamed before the transaction that names it
commits, so a row never names a file half written. Files are not synced, as the log is
not with ``synchronous = NORMAL``: both survive the process killed, not a power cut.
A file that has gone missing all the same reads as :func:`missing`, and is logged.

Where the file system allows it, files are written with ``O_DIRECT``, from an aligned
buffer the store keeps, past the page cache: under a stream of 5 MB results the copy
into the page cache cost the replica some 13 ms of CPU per result (1.2 ms on an idle
machine), the direct write 1 ms and a few milliseconds of the writer thread's waiting.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aip_wire.frames import dumps

log = logging.getLogger("aip.session.store")

#: Serialized values of at least this many bytes are written to a file. Below it a row
#: is cheaper: a file costs an open, a rename and a close, and a directory per session.
SPILL_BYTES = 64 * 1024

#: Direct writes start, end and are sized at multiples of this (the page size covers
#: every common block size).
ALIGNMENT = mmap.PAGESIZE
#: The largest aligned buffer kept between writes; larger values get one of their own.
KEPT_BUFFER = 16 * 1024 * 1024

#: The file of a session's result, beside its commands' ``c<seq>.json``.
RESULT = "result"


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a serialized value went: ``text`` for the row, or the ``file`` naming it."""

    text: str | None
    file: str | None


class FileStore:
    """The directory of large values beside one SQLite file (shared by the replicas
    that share the file)."""

    def __init__(self, root: Path, threshold: int = SPILL_BYTES) -> None:
        self.root = root
        self.threshold = threshold
        #: Whether to try ``O_DIRECT`` (off once the file system refuses it).
        self.direct = hasattr(os, "O_DIRECT")
        self._buffer: mmap.mmap | None = None
        self._lock = threading.Lock()  # the buffer's: one writer thread, but be safe

    def place(self, session_id: str, name: str, value: Any) -> Placed:
        """Serialize ``value``; write it to the session's file ``name`` if it is large.

        Raises ``OSError`` when the file cannot be written: the write fails like any
        other, with its batch.
        """
        data = dumps(value)
        if len(data) < self.threshold:
            return Placed(data.decode(), None)
        relative = f"{session_dir(session_id)}/{name}.json"
        path = self.root / relative
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self._write(temporary, data)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(temporary, data)
        os.replace(temporary, path)
        return Placed(None, relative)

    def read(self, relative: str) -> str:
        """The text a row's file holds (:func:`missing` if it has gone)."""
        try:
            return (self.root / relative).read_bytes().decode()
        except OSError as exc:
            log.warning("the store's file %s cannot be read (%s): its value reads as "
                        "missing", self.root / relative, exc)
            return missing(relative)

    def drop(self, session_ids: Iterable[str]) -> None:
        """Remove the files of these sessions (those without any are skipped)."""
        for session_id in session_ids:
            shutil.rmtree(self.root / session_dir(session_id), ignore_errors=True)

    def _write(self, path: Path, data: bytes) -> None:
        if self.direct:
            try:
                self._write_direct(path, data)
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                # tmpfs and some others refuse O_DIRECT (or its alignment): the page
                # cache it is.
                self.direct = False
                log.info("%s takes no direct writes: large values go through the page "
                         "cache", self.root)
        with open(path, "wb") as stream:
            stream.write(data)

    def _write_direct(self, path: Path, data: bytes) -> None:
        size = -(-len(data) // ALIGNMENT) * ALIGNMENT
        with self._lock:
            buffer = self._buffer
            if buffer is None or len(buffer) < size:
                buffer = mmap.mmap(-1, max(size, ALIGNMENT * 256))  # page-aligned
                if size <= KEPT_BUFFER:
                    if self._buffer is not None:
                        self._buffer.close()
                    self._buffer = buffer
            try:
                buffer[:len(data)] = data
                buffer[len(data):size] = bytes(size - len(data))
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
                try:
                    with memoryview(buffer) as view:
                        written = os.write(fd, view[:size])
                    if written != size:
                        raise OSError(errno.EIO, f"short direct write ({written} of {size} "
                                                 "bytes)", str(path))
                    os.ftruncate(fd, len(data))  # the padding of the last block
                finally:
                    os.close(fd)
            finally:
                if buffer is not self._buffer:
                    buffer.close()


def session_dir(session_id: str) -> str:
    """The directory of a session's files, relative to the root: fanned out by the first
    byte of the hash, so that no directory holds every session."""
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
    return f"{digest[:2]}/{digest}"


def missing(relative: str) -> str:
    """What a value reads as when its file has gone."""
    return dumps({"missing": True, "file": relative,
                  "reason": "the file beside the store that held this value is gone"}
                 ).decode()


def root_of(location: str) -> Path:
    """The directory of large values for the SQLite file at ``location``."""
    return Path(f"{location}-files")


def of(db: Any) -> FileStore | None:
    """The file store of a connection (``None``: every value stays in its row)."""
    return getattr(db, "files", None)


def place(db: Any, session_id: str, name: str, value: Any) -> Placed:
    """``value`` serialized for a row of ``db``: in the row, or in a file beside it."""
    files = of(db)
    if files is None:
        return Placed(dumps(value).decode(), None)
    return files.place(session_id, name, value)


def text_of(db: Any, text: str | None, file: str | None) -> str | None:
    """A row's value: its ``text``, or what its ``file`` holds."""
    files = of(db)
    if file is None or files is None:
        return text
    return files.read(file)

