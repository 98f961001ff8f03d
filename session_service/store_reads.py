"""The store's reads: one session, the old list, and the paged query of the public API.

Plain functions of a connection, run in worker threads (never on the event loop). Every
replica reads the same store, so each answers for every session: its own, those of the
other replicas (running ones with their progress so far) and those of dead ones.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from session_service import store_files, store_slots
from session_service.records import CommandRecord, SessionRecord
from session_service.store_db import Db
from session_service.store_sql import COLUMNS, LIVE, record_of

#: The largest page :func:`page` returns, whatever is asked.
MAX_PAGE = 1000


class BadPageToken(ValueError):
    """A page token this store did not hand out (an INVALID_ARGUMENT for the API)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which sessions a query keeps; an empty field keeps all."""

    device_id: str = ""
    state: str = ""  # queued, running, completed, failed, cancelled
    requester_id: str = ""
    task_name: str = ""
    replica_id: str = ""  # the replica that ran it


@dataclass(frozen=True, slots=True)
class Page:
    """One page of sessions, newest first; ``next_token`` is ``""`` on the last."""

    records: list[SessionRecord]
    next_token: str


@dataclass(frozen=True, slots=True)
class Lease:
    """A replica's lease as stored: its ``--advertise-address`` is where calls for its
    sessions can be forwarded."""

    replica_id: str
    address: str
    lease_expires: float


def lease_rows(db: Db) -> list[Lease]:
    return [Lease(*row) for row in db.execute(
        "SELECT replica_id, address, lease_expires FROM replicas ORDER BY replica_id")]


def one(db: Db, where: str, args: tuple[Any, ...],
        with_commands: bool) -> SessionRecord | None:
    """The newest session matching ``where``, with its command log if asked."""
    row = db.execute(f"SELECT {COLUMNS} FROM sessions WHERE {where} "
                     "ORDER BY created_at DESC LIMIT 1", args).fetchone()
    if row is None:
        return None
    record = _record(db, row)
    if with_commands:
        record.commands = [
            CommandRecord(seq, response_id, actions, sent_at, status,
                          store_files.text_of(db, results, results_file), received_at)
            for seq, response_id, actions, sent_at, status, results, results_file,
            received_at in db.execute(
                "SELECT seq, response_id, actions_json, sent_at, status, results_json, "
                "results_file, received_at FROM commands WHERE session_id = ? ORDER BY seq",
                (record.session_id,),
            )]
        record.turns = [row[0] for row in db.execute(
            "SELECT turn_json FROM model_turns WHERE session_id = ? ORDER BY seq",
            (record.session_id,),
        )]
    return record


def newest(db: Db, device_id: str, running_only: bool, limit: int,
           replica_id: str | None) -> list[SessionRecord]:
    """Newest first, without commands; ``replica_id`` keeps one replica's sessions."""
    where, args = ["TRUE"], []
    if device_id:
        where.append("device_id = ?")
        args.append(device_id)
    if running_only:
        where.append("state = 'running'")
    if replica_id is not None:
        where.append("replica_id = ?")
        args.append(replica_id)
    sql = (f"SELECT {COLUMNS} FROM sessions WHERE {' AND '.join(where)} "
           "ORDER BY created_at DESC LIMIT ?")
    return [_record(db, row) for row in db.execute(sql, (*args, limit)).fetchall()]


def page(db: Db, filters: Filters, page_size: int,
         page_token: str = "") -> Page:
    """Sessions newest first, ``page_size`` at most, after ``page_token``.

    Keyset pagination on ``(created_at, session_id)``: a page starts strictly after the
    last row of the previous one, so sessions created meanwhile neither shift nor repeat
    the pages, and each page costs an index range scan however deep it is.

    :raises BadPageToken: ``page_token`` was not made by this function.
    """
    size = max(1, min(page_size or 100, MAX_PAGE))
    where, args = ["TRUE"], []
    for column in ("device_id", "state", "requester_id", "task_name", "replica_id"):
        value = getattr(filters, column)
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if page_token:
        created_at, session_id = decode_token(page_token)
        where.append("(created_at < ? OR (created_at = ? AND session_id < ?))")
        args += [created_at, created_at, session_id]
    rows = db.execute(
        f"SELECT {COLUMNS} FROM sessions WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, session_id DESC LIMIT ?", (*args, size + 1)).fetchall()
    records = [_record(db, row) for row in rows[:size]]
    last = records[-1] if len(rows) > size else None
    return Page(records, encode_token(last.created_at, last.session_id) if last else "")


def _record(db: Db, row: Any) -> SessionRecord:
    record = record_of(db, row)
    if record.state == "queued":
        record.queue_position = store_slots.position(db, record.session_id)
    return record


def live_by_device(db: Db, other_than: str) -> dict[str, tuple[int, int]]:
    """``(running, queued)`` sessions of each device in replicas other than
    ``other_than``."""
    found: dict[str, tuple[int, int]] = {}
    for device_id, state, count in db.execute(
            f"SELECT device_id, state, COUNT(*) FROM sessions WHERE {LIVE} "
            "AND replica_id <> ? GROUP BY device_id, state", (other_than,)).fetchall():
        running, queued = found.get(device_id, (0, 0))
        found[device_id] = (running, queued + count) if state == "queued" \
            else (running + count, queued)
    return found


def encode_token(created_at: float, session_id: str) -> str:
    """An opaque token for the position after ``(created_at, session_id)``."""
    text = json.dumps([created_at, session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, session_id = json.loads(raw)
        if not isinstance(session_id, str):
            raise TypeError(session_id)
        return float(created_at), session_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadPageToken(f"invalid page token {token!r}") from exc
