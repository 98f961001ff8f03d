"""The one translation between the service's objects and ``session_api`` messages.

Live sessions, stored records, command logs, updates and devices become protobuf here;
times become Timestamps and the service's string vocabularies (states, update kinds,
command statuses) become the API's enums here. Errors are in :mod:`api_errors`.
"""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from aip_grpc import session_api_pb2 as pb
from aip_wire.frames import dumps
from aip_wire.vocab import LIVE_STATES, CommandStatus, SessionState
from session_service.core.session import CommandEntry, Session, Update, UpdateKind
from session_service.presence import ClientRecord
from session_service.records import CommandRecord, SessionRecord

STATES: dict[str, Any] = {
    SessionState.QUEUED: pb.SESSION_STATE_QUEUED,
    SessionState.RUNNING: pb.SESSION_STATE_RUNNING,
    SessionState.COMPLETED: pb.SESSION_STATE_COMPLETED,
    SessionState.FAILED: pb.SESSION_STATE_FAILED,
    SessionState.CANCELLED: pb.SESSION_STATE_CANCELLED,
}
#: A stored state this version does not know shows as unspecified rather than failing.
_STORED_STATES = {**STATES, "": pb.SESSION_STATE_UNSPECIFIED}

#: The state a filter names, back to the service's own vocabulary.
STATE_NAMES: dict[int, SessionState] = {
    value: SessionState(name) for name, value in STATES.items()
}

UPDATE_KINDS: dict[str, Any] = {
    UpdateKind.WATCHING: pb.UPDATE_KIND_WATCHING,
    UpdateKind.STARTED: pb.UPDATE_KIND_STARTED,
    UpdateKind.COMMAND_SENT: pb.UPDATE_KIND_COMMAND_SENT,
    UpdateKind.RESULTS_RECEIVED: pb.UPDATE_KIND_RESULTS_RECEIVED,
    UpdateKind.ENDED: pb.UPDATE_KIND_ENDED,
    UpdateKind.MODEL_TURN: pb.UPDATE_KIND_MODEL_TURN,
    UpdateKind.QUEUED: pb.UPDATE_KIND_QUEUED,
}

COMMAND_STATUSES: dict[str, Any] = {
    CommandStatus.SENT: pb.COMMAND_STATUS_SENT,
    CommandStatus.ANSWERED: pb.COMMAND_STATUS_ANSWERED,
    CommandStatus.TIMEOUT: pb.COMMAND_STATUS_TIMEOUT,
    CommandStatus.UNDELIVERABLE: pb.COMMAND_STATUS_UNDELIVERABLE,
    CommandStatus.UNANSWERED: pb.COMMAND_STATUS_UNANSWERED,
}


def timestamp(seconds: float | None) -> Timestamp | None:
    """Seconds since the epoch as a Timestamp; ``None`` (left unset) for no time."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _json_or_empty(value: Any) -> str:
    return dumps(value).decode() if value is not None else ""


def session_info(session: Session, replica_id: str) -> pb.SessionInfo:
    return pb.SessionInfo(
        session_id=session.session_id,
        task_name=session.task_name,
        device_id=session.device_id,
        requester_id=session.requester_id,
        requester_kind=session.requester_kind,
        state=STATES[session.state],
        result_json="" if session.running else dumps(session.result).decode(),
        error=session.error or "",
        cancel_reason=session.cancel_reason or "",
        created_time=timestamp(session.created_at),
        ended_time=timestamp(session.ended_at),
        steps_done=session.steps_done,
        steps_total=session.steps_total,
        replica_id=replica_id,
        agent=session.agent_name,
        queue_position=session.queue_position,
    )


def detailed_info(session: Session, replica_id: str) -> pb.SessionInfo:
    """A live session with its request and command log, as GetSession answers."""
    info = session_info(session, replica_id)
    info.request = session.request
    info.commands.extend(live_commands(session.commands))
    info.turns.extend(model_turn(turn) for turn in session.turns)
    return info


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def model_turn(turn: dict[str, Any]) -> pb.ModelTurn:
    """One turn of the llm agent's transcript (as :func:`session_service.agents.llm`
    records it) as the API's message."""
    usage = turn.get("usage") or {}
    return pb.ModelTurn(
        seq=_count(turn.get("seq")),
        time=timestamp(turn.get("at")),
        model=str(turn.get("model") or ""),
        text=str(turn.get("text") or ""),
        tool_calls_json=dumps(turn.get("tool_calls") or []).decode(),
        refusal=str(turn.get("refusal") or ""),
        finish_reason=str(turn.get("finish_reason") or ""),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        total_tokens=_count(usage.get("total_tokens")),
    )


def stored_turns(texts: list[str]) -> list[pb.ModelTurn]:
    """Stored turns (JSON text each); a row that is not a JSON object is skipped."""
    turns = []
    for text in texts:
        try:
            turn = orjson.loads(text)
        except ValueError:
            continue
        if isinstance(turn, dict):
            turns.append(model_turn(turn))
    return turns


def live_commands(entries: list[CommandEntry]) -> list[pb.CommandRecord]:
    return [pb.CommandRecord(
        seq=entry.seq,
        response_id=entry.response_id,
        actions_json=_json_or_empty(entry.actions),
        sent_time=timestamp(entry.sent_at),
        status=COMMAND_STATUSES.get(entry.status, pb.COMMAND_STATUS_UNSPECIFIED),
        results_json=_json_or_empty(entry.results),
        received_time=timestamp(entry.received_at),
    ) for entry in entries]


def stored_commands(records: list[CommandRecord]) -> list[pb.CommandRecord]:
    return [pb.CommandRecord(
        seq=record.seq,
        response_id=record.response_id,
        actions_json=record.actions_json,
        sent_time=timestamp(record.sent_at),
        status=COMMAND_STATUSES.get(record.status, pb.COMMAND_STATUS_UNSPECIFIED),
        results_json=record.results_json or "",
        received_time=timestamp(record.received_at),
    ) for record in records]


def restore_results(info: pb.SessionInfo, records: list[CommandRecord], released: int) -> None:
    """Fill in the results of ``info``'s first ``released`` commands, which the session
    no longer holds in memory, from their stored ``records``."""
    stored = {record.seq: record for record in records if record.seq < released}
    for seq in range(min(released, len(info.commands))):
        record = stored.get(seq)
        if record is not None and record.results_json:
            info.commands[seq].results_json = record.results_json


def stored_info(record: SessionRecord, detailed: bool = False) -> pb.SessionInfo:
    """A stored session; ``detailed`` adds the request and the command log."""
    info = pb.SessionInfo(
        session_id=record.session_id,
        task_name=record.task_name,
        device_id=record.device_id,
        requester_id=record.requester_id,
        requester_kind=record.requester_kind,
        state=_STORED_STATES.get(record.state, pb.SESSION_STATE_UNSPECIFIED),
        result_json="" if record.state in LIVE_STATES else record.result_json or "",
        error=record.error or "",
        cancel_reason=record.cancel_reason or "",
        created_time=timestamp(record.created_at),
        ended_time=timestamp(record.ended_at),
        steps_done=record.steps_done,
        steps_total=record.steps_total,
        replica_id=record.replica_id,
        stored=True,
        agent=record.agent,
        queue_position=record.queue_position,
    )
    if detailed:
        info.request = record.request
        info.commands.extend(stored_commands(record.commands))
        info.turns.extend(stored_turns(record.turns))
    return info


def update_of(session: Session, update: Update, replica_id: str) -> pb.SessionUpdate:
    return pb.SessionUpdate(
        kind=UPDATE_KINDS[update.kind],
        session=session_info(session, replica_id),
        response_id=update.response_id,
        detail_json=_json_or_empty(update.detail),
    )


def snapshot(kind: UpdateKind, info: pb.SessionInfo) -> pb.SessionUpdate:
    """An update that carries only the session as it is (``watching``, ``ended``)."""
    return pb.SessionUpdate(kind=UPDATE_KINDS[kind], session=info)


def device_of(record: ClientRecord, running: int, queued: int) -> pb.Device:
    return pb.Device(
        device_id=record.client_id,
        platform=record.platform,
        gateway_id=record.gateway_id,
        device_info_json=dumps(record.device_info).decode(),
        active_sessions=running + queued,
        running_sessions=running,
        queued_sessions=queued,
    )
