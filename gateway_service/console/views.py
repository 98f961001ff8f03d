"""What the console shows, as plain values made from the session API's messages.

This is the console's one translation from protobuf: the templates and the event
streams deal in these dataclasses only. Enum values are named through the generated
descriptors rather than a table of known values, so a state or update kind added to the
proto later (``SESSION_STATE_QUEUED``) shows under its own name, and one this build does
not know yet shows as ``unknown`` instead of failing. Fields that may not exist in the
generated code yet (``queue_position``, ``queued_sessions``) are read with fallbacks.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from aip_grpc import session_api_pb2 as pb
from aip_wire.frames import loads_or_text

#: Images a result may carry, shown as ``<img>``; SVG is left out (it can hold script).
DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


def enum_name(enum: Any, prefix: str, value: int) -> str:
    """``SESSION_STATE_RUNNING`` -> ``running``; ``unknown`` for a value not in ``enum``."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return "unknown"
    return name.removeprefix(prefix).lower()


def enum_names(enum: Any, prefix: str) -> list[str]:
    """Every named value but the unspecified one, in declaration order."""
    return [
        name.removeprefix(prefix).lower()
        for name in enum.keys()
        if not name.endswith("_UNSPECIFIED")
    ]


def state_value(name: str) -> int | None:
    """The proto value of a state named as :func:`enum_name` names it; ``None``: no such."""
    try:
        value: int = pb.SessionState.Value("SESSION_STATE_" + name.upper())
    except ValueError:
        return None
    return value


def session_states() -> list[str]:
    return enum_names(pb.SessionState, "SESSION_STATE_")


def update_kind(update: pb.SessionUpdate) -> str:
    return enum_name(pb.UpdateKind, "UPDATE_KIND_", update.kind)


def _seconds(message: Any, name: str) -> float | None:
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    return float(stamp.ToNanoseconds() / 1e9)


def split_images(value: Any) -> tuple[Any, list[str]]:
    """``value`` with every data-URL image replaced by ``[image N]``, and the images."""
    images: list[str] = []

    def walk(item: Any) -> Any:
        if isinstance(item, str) and item.startswith("data:image/"):
            if DATA_IMAGE.fullmatch(item):
                images.append(item)
                return f"[image {len(images)}]"
            return f"[{len(item)} characters of data URL]"
        if isinstance(item, list):
            return [walk(element) for element in item]
        if isinstance(item, dict):
            return {key: walk(element) for key, element in item.items()}
        return item

    return walk(value), images


def pretty(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


@dataclass(frozen=True, slots=True)
class SessionView:
    """One session, summed up for a table row or a session page's header."""

    session_id: str
    task_name: str
    device_id: str
    requester: str
    agent: str
    state: str
    queue_position: int
    steps_done: int
    steps_total: int
    created: float | None
    ended: float | None
    error: str
    cancel_reason: str
    replica_id: str

    @property
    def running(self) -> bool:
        return self.ended is None and self.state in ("running", "queued")

    @property
    def duration(self) -> float | None:
        if self.created is None:
            return None
        end = self.ended if self.ended is not None else time.time()
        return max(0.0, end - self.created)

    def matches(self, query: str) -> bool:
        """Whether the search text occurs in any of the row's names (any case)."""
        needle = query.strip().lower()
        if not needle:
            return True
        haystack = (
            self.session_id,
            self.task_name,
            self.device_id,
            self.requester,
            self.agent,
            self.state,
            self.error,
        )
        return any(needle in text.lower() for text in haystack)


def session_view(info: pb.SessionInfo) -> SessionView:
    requester = info.requester_id
    if info.requester_kind and info.requester_kind != info.requester_id:
        requester = f"{info.requester_id} ({info.requester_kind})"
    return SessionView(
        session_id=info.session_id,
        task_name=info.task_name,
        device_id=info.device_id,
        requester=requester,
        agent=getattr(info, "agent", "") or "plan",
        state=enum_name(pb.SessionState, "SESSION_STATE_", info.state),
        queue_position=int(getattr(info, "queue_position", 0) or 0),
        steps_done=info.steps_done,
        steps_total=info.steps_total,
        created=_seconds(info, "created_time"),
        ended=_seconds(info, "ended_time"),
        error=info.error,
        cancel_reason=info.cancel_reason,
        replica_id=info.replica_id,
    )


@dataclass(frozen=True, slots=True)
class ResultView:
    status: str
    error: str
    text: str
    images: list[str]


@dataclass(frozen=True, slots=True)
class CommandView:
    """One command of the log: its actions and, once answered, each action's result."""

    response_id: str
    seq: int | None
    status: str
    actions: list[tuple[str, str]]
    results: list[ResultView] = field(default_factory=list)
    #: Results that are not a list of action results, shown as they are.
    raw_results: str = ""
    raw_images: list[str] = field(default_factory=list)
    sent: float | None = None
    received: float | None = None


def _actions(actions: Any) -> list[tuple[str, str]]:
    if not isinstance(actions, list):
        return [("?", pretty(actions))]
    shown = []
    for action in actions:
        if isinstance(action, dict):
            name = str(action.get("tool_name") or action.get("function") or "?")
            shown.append((name, pretty(action.get("parameters", {}))))
        else:
            shown.append(("?", pretty(action)))
    return shown


def command_view(
    response_id: str,
    actions_json: str,
    results_json: str,
    *,
    status: str,
    seq: int | None = None,
    sent: float | None = None,
    received: float | None = None,
) -> CommandView:
    actions = _actions(loads_or_text(actions_json))
    results_value = loads_or_text(results_json)
    if isinstance(results_value, list) and all(isinstance(r, dict) for r in results_value):
        results = []
        for result in results_value:
            text, images = split_images(result.get("result"))
            results.append(
                ResultView(
                    status=str(result.get("status") or ""),
                    error=str(result.get("error") or ""),
                    text=pretty(text),
                    images=images,
                )
            )
        return CommandView(response_id, seq, status, actions, results, sent=sent, received=received)
    raw, images = split_images(results_value)
    return CommandView(
        response_id,
        seq,
        status,
        actions,
        raw_results=pretty(raw),
        raw_images=images,
        sent=sent,
        received=received,
    )


def record_view(record: pb.CommandRecord) -> CommandView:
    return command_view(
        record.response_id,
        record.actions_json,
        record.results_json,
        status=enum_name(pb.CommandStatus, "COMMAND_STATUS_", record.status),
        seq=record.seq,
        sent=_seconds(record, "sent_time"),
        received=_seconds(record, "received_time"),
    )


@dataclass(frozen=True, slots=True)
class TurnView:
    """One answer of the model to the llm agent."""

    seq: int
    model: str
    text: str
    tool_calls: list[tuple[str, str]]
    refusal: str
    finish_reason: str
    total_tokens: int


def _tool_calls(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [
        (str(call.get("name") or "?"), str(call.get("arguments") or ""))
        for call in value
        if isinstance(call, dict)
    ]


def turn_view(turn: pb.ModelTurn) -> TurnView:
    return TurnView(
        turn.seq,
        turn.model,
        turn.text,
        _tool_calls(loads_or_text(turn.tool_calls_json)),
        turn.refusal,
        turn.finish_reason,
        turn.total_tokens,
    )


def turn_from_json(text: str) -> TurnView | None:
    """A turn as a ``MODEL_TURN`` update carries it (the agent's own JSON)."""
    turn = loads_or_text(text)
    if not isinstance(turn, dict):
        return None
    usage = turn.get("usage") if isinstance(turn.get("usage"), dict) else {}
    seq = turn.get("seq")
    tokens = usage.get("total_tokens") if usage else 0
    return TurnView(
        seq if isinstance(seq, int) else 0,
        str(turn.get("model") or ""),
        str(turn.get("text") or ""),
        _tool_calls(turn.get("tool_calls")),
        str(turn.get("refusal") or ""),
        str(turn.get("finish_reason") or ""),
        tokens if isinstance(tokens, int) else 0,
    )


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """A session page: the summary, the request, the command log and the model turns."""

    summary: SessionView
    request: str
    commands: list[CommandView]
    turns: list[TurnView]
    result: str
    result_images: list[str]


def session_detail(info: pb.SessionInfo) -> SessionDetail:
    result, images = split_images(loads_or_text(info.result_json))
    return SessionDetail(
        summary=session_view(info),
        request=pretty(loads_or_text(info.request))
        if info.request.lstrip()[:1] in ("{", "[")
        else info.request,
        commands=[record_view(record) for record in info.commands],
        turns=[turn_view(turn) for turn in info.turns],
        result=pretty(result),
        result_images=images,
    )
