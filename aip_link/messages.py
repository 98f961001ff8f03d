"""What crosses the link, as the services speak it: one frozen dataclass per message.

Field names and meanings follow ``protos/aip_grpc/link.proto``; enumerations are the
project's own (:mod:`aip_wire.vocab`), JSON documents are Python values, and AIP frames
that pass through unchanged are bytes. Nothing here knows protobuf: only
:mod:`aip_link.codec` does.

The classes are not ``frozen``: a frozen dataclass sets each field through
``object.__setattr__``, four times the cost of a plain one, and every command crosses the
link as several of these. Treat them as values all the same: nobody changes a message
once it is built. The one exception is a cache: a message holding device info (a
dict) keeps its JSON encoding once made, since both measuring the message
(:func:`aip_link.sizes.size_hint`) and encoding it need it, and a message broadcast to
every replica is encoded for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aip_wire.frames import dumps
from aip_wire.vocab import CancelReason, ClientType, RejectionCode, RequesterKind

# ---------------------------------------------------------------- gateway -> session


@dataclass(slots=True)
class ClientPresence:
    """One registered client as every replica knows it."""

    client_id: str
    client_type: ClientType
    platform: str
    device_info: dict[str, Any]
    gateway_id: str
    _info_json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def device_info_json(self) -> bytes:
        """``device_info`` as JSON, encoded on first use only."""
        if self._info_json is None:
            self._info_json = dumps(self.device_info)
        return self._info_json


@dataclass(slots=True)
class Hello:
    """First message on every (re)connected link: the gateway's full presence, or its
    first page when ``more`` is set (:class:`PresencePage` messages follow)."""

    gateway_id: str
    clients: tuple[ClientPresence, ...] = ()
    more: bool = False


@dataclass(slots=True)
class PresencePage:
    """A further page of the presence snapshot a :class:`Hello` began; the snapshot is
    whole once the page with ``last`` set has arrived."""

    clients: tuple[ClientPresence, ...]
    last: bool


@dataclass(slots=True)
class ClientOnline:
    client: ClientPresence


@dataclass(slots=True)
class ClientOffline:
    client_id: str
    client_type: ClientType
    gateway_id: str


@dataclass(slots=True)
class TaskSubmit:
    """Start a session; answered by :class:`TaskAccepted` or :class:`TaskRejected`."""

    submit_id: int
    session_id: str
    task_name: str
    request: str
    requester_id: str
    requester_kind: RequesterKind
    device_id: str
    gateway_id: str
    #: The agent asked for ("" lets the replica choose by the request), and the llm
    #: agent's model for this session ("" its default).
    agent: str = ""
    model: str = ""
    #: The W3C ``traceparent`` of the gateway's span for the task ("" when untraced).
    traceparent: str = ""


@dataclass(slots=True)
class CommandResults:
    """A device's ``command_results`` frame, as it sent it, for the session's replica.

    ``device_id`` is the identity bound to the socket it came from; ``response_id`` the
    command it answers (the frame's ``prev_response_id``).
    """

    session_id: str
    device_id: str
    response_id: str
    frame_json: bytes


@dataclass(slots=True)
class CancelSession:
    session_id: str
    reason: str = CancelReason.REQUESTED
    requester_id: str = ""
    #: The gateway's submit whose session this is, 0 for none (see link.proto).
    submit_id: int = 0


@dataclass(slots=True)
class DeviceInfoUpdate:
    device_id: str
    device_info: dict[str, Any]
    _info_json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def device_info_json(self) -> bytes:
        """``device_info`` as JSON, encoded on first use only."""
        if self._info_json is None:
            self._info_json = dumps(self.device_info)
        return self._info_json


@dataclass(slots=True)
class Ping:
    nonce: int


# ---------------------------------------------------------------- session -> gateway


@dataclass(slots=True)
class Welcome:
    """The replica's answer to :class:`Hello`."""

    replica_id: str
    active_sessions: int


@dataclass(slots=True)
class TaskAccepted:
    submit_id: int
    session_id: str
    active_sessions: int


@dataclass(slots=True)
class TaskRejected:
    submit_id: int
    session_id: str
    error: str
    code: RejectionCode


@dataclass(slots=True)
class SessionOpened:
    """A session another gateway (or a backend) started runs on a device of this
    gateway: route the device's results to the replica that sent this."""

    session_id: str
    task_name: str
    device_id: str
    requester_id: str
    requester_kind: RequesterKind


@dataclass(slots=True)
class DeviceFrame:
    """An AIP frame (a command) for one device, ready to write to its socket."""

    device_id: str
    session_id: str
    frame_json: bytes


@dataclass(slots=True)
class TaskEnded:
    """A session ended; ``frame_json`` is its ``task_end`` frame.

    ``notify_requester`` and ``notify_device`` say who of those this gateway holds must
    hear it (see :func:`aip_wire.vocab.end_audience`).
    """

    session_id: str
    requester_id: str
    requester_kind: RequesterKind
    device_id: str
    notify_requester: bool
    notify_device: bool
    frame_json: bytes
    active_sessions: int


@dataclass(slots=True)
class Pong:
    nonce: int
    active_sessions: int


GatewayMessage = (
    Hello | PresencePage | ClientOnline | ClientOffline | TaskSubmit | CommandResults
    | CancelSession | DeviceInfoUpdate | Ping
)
SessionMessage = (
    Welcome | TaskAccepted | TaskRejected | SessionOpened | DeviceFrame | TaskEnded | Pong
)
