"""The project's vocabulary: one name and one type for each concept, used everywhere.

The gateway, the session service, the link between them and the client SDK all take
these enums; none of them spells a wire value as a loose string. Every member is a
``str`` (or an ``int`` for close codes), so it compares equal to the wire value, goes into
JSON as itself and needs no conversion at the edges.

Two groups: what AIP frames carry on the WebSocket (message types, client types,
statuses, close codes), and what the services say about sessions (states, requesters,
cancel reasons, command outcomes, rejections).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

# ---------------------------------------------------------------------------- AIP frames


class MessageType(StrEnum):
    """A frame's ``type``."""

    REGISTER = "register"
    HEARTBEAT = "heartbeat"
    TASK = "task"
    COMMAND = "command"  # server -> client only
    COMMAND_RESULTS = "command_results"
    TASK_END = "task_end"
    ERROR = "error"
    DEVICE_INFO_REQUEST = "device_info_request"
    DEVICE_INFO_RESPONSE = "device_info_response"


#: The types a client may send.
CLIENT_MESSAGE_TYPES = frozenset(MessageType) - {MessageType.COMMAND}
#: The types a strict client accepts from the server.
SERVER_MESSAGE_TYPES = frozenset(MessageType) - {
    MessageType.REGISTER, MessageType.COMMAND_RESULTS
}


class ClientType(StrEnum):
    """What a registered socket is: ``client_type`` of its register frame."""

    DEVICE = "device"
    CONSTELLATION = "constellation"


class Status(StrEnum):
    """A frame's ``status``."""

    CONTINUE = "continue"
    COMPLETED = "completed"
    FAILED = "failed"
    OK = "ok"
    ERROR = "error"


class ResultStatus(StrEnum):
    """The ``status`` of one entry of ``action_results``."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    NONE = "none"


class ToolType(StrEnum):
    """A command's ``tool_type``: reference devices route by it."""

    ACTION = "action"
    DATA_COLLECTION = "data_collection"


class CloseCode(IntEnum):
    """WebSocket close codes the gateway ends a socket with (4000-4999: application)."""

    SERVICE_RESTART = 1012  # the gateway drains on shutdown: reconnect
    REPLACED = 4000  # the old socket of a client_id that registered again
    BAD_REGISTRATION = 4400
    UNAUTHORIZED = 4401
    TARGET_NOT_CONNECTED = 4404
    REGISTRATION_TIMEOUT = 4408
    SILENT = 4408  # no frame at all for longer than the silence limit (same code)
    DUPLICATE = 4409
    TOO_SLOW = 4429  # the client stopped reading and its outbox overflowed


# ---------------------------------------------------------------------------- sessions


class SessionState(StrEnum):
    """A session as its records and the public API show it."""

    QUEUED = "queued"  # waiting for its device, behind the sessions that run on it
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The states of a session that has not ended (stored states compare equal as text).
LIVE_STATES = frozenset({SessionState.QUEUED, SessionState.RUNNING})


class RequesterKind(StrEnum):
    """Who asked for a session; decides who hears its ``task_end``."""

    DEVICE = "device"  # a device running a task on itself
    CONSTELLATION = "constellation"  # a constellation driving a device
    HTTP = "http"  # the gateway's HTTP API
    BACKEND = "backend"  # a backend calling the public gRPC API


#: Requesters that hold a socket and hear ``task_end`` on it.
SOCKET_REQUESTERS = frozenset({RequesterKind.DEVICE, RequesterKind.CONSTELLATION})


class CancelReason(StrEnum):
    """Why a session was cancelled, as its record says. Callers of the public API may
    give a reason of their own; these are the ones the services use."""

    REQUESTED = "requested"
    CANCELLED = "cancelled"  # the agent was stopped without a reason given
    DEVICE_DISCONNECTED = "device_disconnected"
    CONSTELLATION_DISCONNECTED = "constellation_disconnected"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    REPLICA_SHUTDOWN = "replica_shutdown"
    REPLICA_RESTARTED = "replica_restarted"
    REPLICA_LOST = "replica_lost"  # its replica's lease in the shared store lapsed
    QUEUE_TIMEOUT = "queue_timeout"  # it waited for its device longer than allowed
    SUBMIT_TIMEOUT = "submit_timeout"
    LINK_LOST = "link_lost"


class CommandStatus(StrEnum):
    """How one command of a session went, as its command log says."""

    SENT = "sent"  # still waiting for its results
    ANSWERED = "answered"
    TIMEOUT = "timeout"
    UNDELIVERABLE = "undeliverable"
    UNANSWERED = "unanswered"  # the session ended while it waited


class RejectionCode(StrEnum):
    """Why a task was not started. Chosen by the rules; each adapter maps it to its own
    protocol (an error frame, an HTTP status, a gRPC status)."""

    EXISTS = "exists"  # the session id is taken
    NOT_FOUND = "not_found"  # the device is not connected
    INVALID = "invalid"  # the request itself is wrong
    LIMIT = "limit"  # as many sessions run on and wait for the device as allowed
    DRAINING = "draining"  # the replica is shutting down
    RATE_LIMITED = "rate_limited"  # the client sends tasks too fast
    UNAVAILABLE = "unavailable"  # no replica is reachable
    TIMEOUT = "timeout"  # no replica answered in time


def end_audience(
    requester_kind: RequesterKind, cancel_reason: str | None
) -> tuple[bool, bool]:
    """Who hears a session's ``task_end``: ``(requester, device)``.

    The requester hears it when it holds a socket and is still there (a constellation
    that left does not). The device hears it when someone else asked (a device that
    asked for itself hears it once, as the requester) and it did not leave itself:
    whatever else ended the session, the device must stop the work it still runs.
    """
    requester_left = (cancel_reason == CancelReason.CONSTELLATION_DISCONNECTED
                      and requester_kind == RequesterKind.CONSTELLATION)
    notify_requester = requester_kind in SOCKET_REQUESTERS and not requester_left
    notify_device = (requester_kind != RequesterKind.DEVICE
                     and cancel_reason != CancelReason.DEVICE_DISCONNECTED)
    return notify_requester, notify_device
