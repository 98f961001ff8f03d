"""AIP frames as they cross the wire: lenient on input, exact on output.

Input: :func:`parse_client_frame` turns one WebSocket message (text, or bytes holding
UTF-8 JSON) into a :class:`ClientFrame`, accepting any case for enumerated values and
ignoring unknown fields. It raises :class:`FrameError` with a message fit to send back
to the client.

Output: the ``*_frame`` builders return plain dicts holding only values real clients
accept (lowercase types and statuses, ISO 8601 timestamps with a UTC offset), and
:func:`encode` serialises one to the text of a WebSocket message. No I/O happens here.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aip_wire.vocab import MessageType, Status

# The values the per-frame builders need, as plain strings bound once: on CPython 3.11
# each ``MessageType.X`` goes through the enum's metaclass (about 0.1 us), and a plain
# ``str`` is the cheapest thing for orjson to write and for ``==`` to compare.
_HEARTBEAT = MessageType.HEARTBEAT.value
_COMMAND = MessageType.COMMAND.value
_TASK_END = MessageType.TASK_END.value
_OK = Status.OK.value
_CONTINUE = Status.CONTINUE.value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dumps(value: Any) -> bytes:
    """JSON bytes of any value that came from JSON, client data included.

    orjson is fast but refuses integers beyond 64 bits, which JSON allows and a client
    may send; those values take the slower standard-library path, with non-finite floats
    written as null as orjson does.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(_finite(value), separators=(",", ":"), default=str).encode()


#: Documents of at least this many bytes are parsed by pydantic-core rather than orjson.
LARGE_DOCUMENT = 64 * 1024


def load_json(data: bytes) -> Any:
    """A JSON document a client sent, of any size; raises ``ValueError``.

    orjson is the fastest parser of small documents, but it reserves about twelve times
    the document's size as working memory: 60 MB for a 5 MB result, more than glibc
    serves from its heap, so every such parse maps fresh memory and faults it in page
    by page (4 ms, where pydantic-core's parser takes 0.6 ms and no new pages). Large
    documents therefore go to the latter. Integers beyond 64 bits, which orjson
    refuses, and anything either refuses take the standard library's parser, the one
    that decides what is JSON.
    """
    try:
        if len(data) >= LARGE_DOCUMENT:
            return pydantic_core.from_json(data, allow_inf_nan=False)
        return orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError is one
        pass
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def loads_or_text(text: str) -> Any:
    """A JSON field of a record as its value: ``None`` when empty, the text itself when
    it is not JSON (what a device sent is shown, not dropped)."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


class FrameError(ValueError):
    """A client message that cannot be understood; ``str(err)`` is the reason."""


class UnreadObject(BaseModel):
    """A JSON object taken without building its values: what an action's result holds
    (a screenshot's base64 text, megabytes) is for the session service, which receives
    the frame's text as it came."""

    model_config = ConfigDict(extra="ignore", frozen=True)


#: ``action_results`` as the gateway checks them: a list, whose objects are
#: :class:`UnreadObject` (anything else is kept as it came).
ActionResults = list[Annotated[UnreadObject | Any, Field(union_mode="left_to_right")]]


class ClientFrame(BaseModel):
    """One client -> server frame, normalised.

    Enumerated fields (``type``, ``status``, ``client_type``) are lowercased. ``request``
    may arrive as a string or as JSON (an object or a list), which is kept as JSON text.
    ``action_results`` is checked to be a list, and its objects are not read (see
    :data:`ActionResults`): building them cost a third of a big result's parse.
    """

    model_config = ConfigDict(extra="ignore", frozen=False)

    type: str
    status: str = Status.OK
    client_type: str | None = None
    client_id: str | None = None
    session_id: str | None = None
    task_name: str | None = None
    target_id: str | None = None
    request: str | None = None
    action_results: ActionResults | None = None
    timestamp: str | None = None
    request_id: str | None = None
    prev_response_id: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _lower_type(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("status", mode="before")
    @classmethod
    def _lower_status(cls, value: Any) -> Any:
        if value is None:
            return Status.OK
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("client_type", mode="before")
    @classmethod
    def _lower_client_type(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("request", mode="before")
    @classmethod
    def _request_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict | list):
            return dumps(value).decode()
        return value

    @field_validator("error", mode="before")
    @classmethod
    def _error_as_text(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        return dumps(value).decode()


#: Longer messages are never taken for plain heartbeats (a reference client's is about
#: 400 bytes), so that large frames are parsed once.
_HEARTBEAT_SIZE_LIMIT = 4096
#: ClientFrame's fields and the JSON types each accepts, for :func:`is_plain_heartbeat`.
_TEXT_FIELDS = ("status", "client_type", "client_id", "session_id", "task_name",
                "target_id", "timestamp", "request_id", "prev_response_id")


def is_plain_heartbeat(data: str | bytes) -> bool:
    """Whether ``parse_client_frame(data)`` would give a valid frame of type heartbeat.

    Heartbeats are most of what clients send, and nothing in one matters beyond its
    type, so the receive path answers them without building a :class:`ClientFrame`.
    Conservative: ``False`` sends the message through :func:`parse_client_frame`, which
    decides (and words any error); anything unusual (invalid UTF-8, integers beyond 64
    bits, deep nesting, a field of an unexpected type, over 4 KiB) answers ``False``.
    """
    if len(data) > _HEARTBEAT_SIZE_LIMIT:  # results and the like: not parsed twice
        return False
    # Other frames skip the JSON parse; an unusual spelling (HEARTBEAT) takes the full one.
    if "eartbeat" not in data if isinstance(data, str) else b"eartbeat" not in data:
        return False
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if type(obj) is not dict:
        return False
    kind = obj.get("type")
    if type(kind) is not str or kind.strip().lower() != _HEARTBEAT:
        return False
    for name in _TEXT_FIELDS:
        value = obj.get(name)
        if value is not None and type(value) is not str:
            return False
    request = obj.get("request")
    if request is not None and type(request) not in (str, dict, list):
        return False
    results = obj.get("action_results")
    if results is not None and type(results) is not list:
        return False
    metadata = obj.get("metadata")
    return metadata is None or type(metadata) is dict


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:3]:
        location = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "missing":
            parts.append(f"missing required field '{location}'")
        elif kind in {"json_invalid", "json_type"}:
            parts.append(f"not valid JSON ({item['msg']})")
        elif kind == "model_type" or not location:
            parts.append("a frame must be a JSON object")
        else:
            parts.append(f"field '{location}': {item['msg']}")
    return "Invalid message format: " + "; ".join(parts)


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one client message.

    :raises FrameError: the message is not UTF-8, not JSON, not an object, nests deeper
        than the JSON parser's recursion limit, or has a field of the wrong type.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("Invalid message format: not valid UTF-8") from exc
    try:
        return ClientFrame.model_validate_json(data)
    except ValidationError as exc:
        raise FrameError(_describe(exc)) from exc


# ---------------------------------------------------------------------------- output


def now_iso() -> str:
    """The current time as ISO 8601 with a UTC offset, as clients expect.

    Exactly ``datetime.now(UTC).isoformat()``, at half the cost: every frame the server
    sends carries one, and the date and time of day change once a second.
    """
    return iso_from_epoch(time.time())


#: The last second formatted, and its text (one tuple: replaced whole, never torn).
_last_second: tuple[int, str] = (-1, "")


def iso_from_epoch(stamp: float) -> str:
    """``datetime.fromtimestamp(stamp, UTC).isoformat()`` for ``stamp`` >= 0."""
    global _last_second
    second = int(stamp)
    micro = round((stamp - second) * 1_000_000)  # half-even, as datetime rounds
    if micro == 1_000_000:
        second, micro = second + 1, 0
    cached_second, text = _last_second
    if cached_second != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (second, text)
    if micro:
        return f"{text}.{micro:06d}+00:00"
    return f"{text}+00:00"


_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def new_id() -> str:
    """A fresh ``response_id``: unique per process and across processes (random prefix),
    and much cheaper than a UUID on the per-frame path."""
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def encode(frame: dict[str, Any]) -> str:
    """Serialise a server frame to the text of one WebSocket message."""
    return dumps(frame).decode()


def heartbeat_frame(*, session_id: str | None = None) -> dict[str, Any]:
    """The heartbeat ack; also the registration confirmation and the task ack."""
    frame: dict[str, Any] = {
        "type": _HEARTBEAT,
        "status": _OK,
        "timestamp": now_iso(),
        "response_id": new_id(),
    }
    if session_id is not None:
        frame["session_id"] = session_id
    return frame


def error_frame(error: str, *, session_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": MessageType.ERROR,
        "status": Status.ERROR,
        "error": error,
        "timestamp": now_iso(),
        "response_id": new_id(),
    }
    if session_id is not None:
        frame["session_id"] = session_id
    return frame


def device_info_response_frame(
    *, result: Any, response_id: str | None, error: str | None = None
) -> dict[str, Any]:
    """Answer to a device_info_request; ``response_id`` echoes the ``request_id``."""
    frame: dict[str, Any] = {
        "type": MessageType.DEVICE_INFO_RESPONSE,
        "status": Status.ERROR if error else Status.OK,
        "result": result,
        "timestamp": now_iso(),
        "response_id": response_id if response_id is not None else new_id(),
    }
    if error:
        frame["error"] = error
    return frame


def command_frame(
    *,
    session_id: str,
    task_name: str,
    response_id: str,
    actions: list[dict[str, Any]],
    agent_name: str | None = None,
    process_name: str | None = None,
    root_name: str | None = None,
    status: str = _CONTINUE,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": _COMMAND,
        "status": status,
        "session_id": session_id,
        "task_name": task_name,
        "response_id": response_id,
        "actions": actions,
        "timestamp": now_iso(),
    }
    if agent_name is not None:
        frame["agent_name"] = agent_name
    if process_name is not None:
        frame["process_name"] = process_name
    if root_name is not None:
        frame["root_name"] = root_name
    return frame


def task_end_frame(
    *,
    session_id: str,
    task_name: str,
    status: str,
    result: Any,
    error: str | None,
) -> dict[str, Any]:
    """``status`` is ``completed`` or ``failed``."""
    return {
        "type": _TASK_END,
        "status": status,
        "session_id": session_id,
        "task_name": task_name,
        "result": result,
        "error": error,
        "timestamp": now_iso(),
        "response_id": new_id(),
    }
