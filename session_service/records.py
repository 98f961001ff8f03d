"""A session and its commands as the store keeps them: plain rows, JSON as text.

Apart from the store so that the manager can build a record without importing SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from session_service.core.device_queue import RUN, Placement


@dataclass(slots=True)
class CommandRecord:
    """One command of a session and what came of it; JSON as text."""

    seq: int
    response_id: str
    actions_json: str
    sent_at: float
    status: str
    results_json: str | None = None
    received_at: float | None = None


@dataclass(slots=True)
class SessionRecord:
    """A session as stored; ``result_json`` is JSON text (``None`` while running)."""

    session_id: str
    task_name: str
    request: str
    device_id: str
    requester_id: str
    requester_kind: str
    agent: str
    replica_id: str
    state: str
    created_at: float
    result_json: str | None = None
    error: str | None = None
    cancel_reason: str | None = None
    ended_at: float | None = None
    steps_done: int = 0
    steps_total: int = 0
    commands: list[CommandRecord] = field(default_factory=list)
    #: Written at creation, never read back into a record: the store's unique key on
    #: ``(requester_id, idempotency_key)`` is what uses it.
    idempotency_key: str = ""
    #: The language-model agent's turns, JSON text each, in order (read with the
    #: command log).
    turns: list[str] = field(default_factory=list)
    #: A queued session's place in its device's line (1: next), read with the record.
    queue_position: int = 0


@dataclass(slots=True)
class Claim:
    """The outcome of a session's creation in the store, filled in by its writer before
    the creation's callback runs: ``winner`` is the record that already held the id
    (``None``: this creation won it). The holder may be another session of the same
    requester under the same idempotency key. ``placement`` is where the new session
    stands in its device's line (:mod:`~session_service.core.device_queue`)."""

    winner: SessionRecord | None = None
    placement: Placement = RUN
