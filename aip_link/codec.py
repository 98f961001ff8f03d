"""The link's protobuf, read and written in one place.

:func:`encode_gateway_stream` / :func:`decode_gateway_batch` carry what a gateway sends,
:func:`encode_session_stream` / :func:`decode_session_batch` what a replica sends. Each
message type has one encoder and one decoder below, side by side, so a field added to
the proto is added here once. A message of a kind this build does not know (a newer peer)
decodes to nothing and is logged, rather than breaking the link.

A batch of a :class:`~aip_link.batching.BatchQueue` is one stream message, except a
single message larger than the batch bound: that one is serialized once and written as
``Fragment`` stream messages (:mod:`aip_link.fragments`), which the receiver's decoder
puts back together with its stream's :class:`~aip_link.fragments.Reassembly`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from aip_grpc import link_pb2
from aip_link import messages as m
from aip_link.channel import LINK_BATCH_BYTES, MAX_MESSAGE_BYTES
from aip_link.fragments import FragmentError, Reassembly, split
from aip_link.sizes import size_hint
from aip_wire.vocab import ClientType, RejectionCode, RequesterKind

log = logging.getLogger("aip.link.codec")

_CLIENT_TYPE_TO_PB = {
    ClientType.DEVICE: link_pb2.CLIENT_KIND_DEVICE,
    ClientType.CONSTELLATION: link_pb2.CLIENT_KIND_CONSTELLATION,
}
_CLIENT_TYPE_OF_PB: dict[int, ClientType] = {
    value: key for key, value in _CLIENT_TYPE_TO_PB.items()
}
_REQUESTER_TO_PB = {
    RequesterKind.DEVICE: link_pb2.REQUESTER_KIND_DEVICE,
    RequesterKind.CONSTELLATION: link_pb2.REQUESTER_KIND_CONSTELLATION,
    RequesterKind.HTTP: link_pb2.REQUESTER_KIND_HTTP,
    RequesterKind.BACKEND: link_pb2.REQUESTER_KIND_BACKEND,
}
_REQUESTER_OF_PB: dict[int, RequesterKind] = {value: key for key, value in _REQUESTER_TO_PB.items()}
_REJECTION_TO_PB = {
    RejectionCode.EXISTS: link_pb2.REJECTION_CODE_EXISTS,
    RejectionCode.NOT_FOUND: link_pb2.REJECTION_CODE_NOT_FOUND,
    RejectionCode.INVALID: link_pb2.REJECTION_CODE_INVALID,
    RejectionCode.LIMIT: link_pb2.REJECTION_CODE_LIMIT,
    RejectionCode.DRAINING: link_pb2.REJECTION_CODE_DRAINING,
    RejectionCode.UNAVAILABLE: link_pb2.REJECTION_CODE_UNAVAILABLE,
}
_REJECTION_OF_PB: dict[int, RejectionCode] = {value: key for key, value in _REJECTION_TO_PB.items()}


def _client_type(value: int) -> ClientType:
    # An unset kind is what an older gateway sent for devices.
    return _CLIENT_TYPE_OF_PB.get(value, ClientType.DEVICE)


def _requester(value: int) -> RequesterKind:
    return _REQUESTER_OF_PB.get(value, RequesterKind.BACKEND)


def json_object(data: bytes) -> dict[str, Any]:
    """A JSON object from the link; ``{}`` for anything else (empty, malformed, a list)."""
    if not data:
        return {}
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- gateway -> session


def _fill(target: Any, **fields: Any) -> None:
    """Set ``fields`` on ``target``, a message inside the one being built.

    Messages are built in place, never passed to a constructor: a constructor or an
    assignment copies a message (and its megabytes of frame) once per level of nesting.
    ``SetInParent`` marks ``target`` present even when every field keeps its default.
    """
    target.SetInParent()
    for name, value in fields.items():
        setattr(target, name, value)


def _fill_presence(target: link_pb2.ClientPresence, client: m.ClientPresence) -> None:
    _fill(target, client_id=client.client_id, kind=_CLIENT_TYPE_TO_PB[client.client_type],
          platform=client.platform, device_info_json=client.device_info_json(),
          gateway_id=client.gateway_id)


def _presence(pb: link_pb2.ClientPresence) -> m.ClientPresence:
    return m.ClientPresence(
        client_id=pb.client_id,
        client_type=_client_type(pb.kind),
        platform=pb.platform,
        device_info=json_object(pb.device_info_json),
        gateway_id=pb.gateway_id,
    )


def _encode_gateway(message: m.GatewayMessage, item: link_pb2.GatewayMessage) -> None:
    """Write ``message`` into ``item``, an empty message of a batch."""
    match message:
        case m.CommandResults():
            _fill(item.command_results, session_id=message.session_id,
                  device_id=message.device_id, response_id=message.response_id,
                  frame_json=message.frame_json)
        case m.TaskSubmit():
            _fill(item.task_submit, submit_id=message.submit_id,
                  session_id=message.session_id, task_name=message.task_name,
                  request=message.request, requester_id=message.requester_id,
                  requester_kind=_REQUESTER_TO_PB[message.requester_kind],
                  device_id=message.device_id, gateway_id=message.gateway_id,
                  agent=message.agent, model=message.model, traceparent=message.traceparent)
        case m.ClientOnline():
            item.client_online.SetInParent()
            _fill_presence(item.client_online.client, message.client)
        case m.ClientOffline():
            _fill(item.client_offline, client_id=message.client_id,
                  kind=_CLIENT_TYPE_TO_PB[message.client_type], gateway_id=message.gateway_id)
        case m.CancelSession():
            _fill(item.cancel_session, session_id=message.session_id, reason=message.reason,
                  requester_id=message.requester_id, submit_id=message.submit_id)
        case m.DeviceInfoUpdate():
            _fill(item.device_info_update, device_id=message.device_id,
                  device_info_json=message.device_info_json())
        case m.Ping():
            _fill(item.ping, nonce=message.nonce)
        case m.Hello():
            _fill(item.hello, gateway_id=message.gateway_id, more=message.more)
            for client in message.clients:
                _fill_presence(item.hello.clients.add(), client)
        case m.PresencePage():
            _fill(item.presence_page, last=message.last)
            for client in message.clients:
                _fill_presence(item.presence_page.clients.add(), client)
        case _:
            raise TypeError(f"not a gateway -> session message: {message!r}")


_GATEWAY_DECODERS: dict[str, Callable[[Any], m.GatewayMessage]] = {
    "command_results": lambda b: m.CommandResults(
        session_id=b.session_id, device_id=b.device_id, response_id=b.response_id,
        frame_json=b.frame_json,
    ),
    "task_submit": lambda b: m.TaskSubmit(
        submit_id=b.submit_id, session_id=b.session_id, task_name=b.task_name,
        request=b.request, requester_id=b.requester_id,
        requester_kind=_requester(b.requester_kind), device_id=b.device_id,
        gateway_id=b.gateway_id, agent=b.agent, model=b.model,
        traceparent=b.traceparent,
    ),
    "client_online": lambda b: m.ClientOnline(client=_presence(b.client)),
    "client_offline": lambda b: m.ClientOffline(
        client_id=b.client_id, client_type=_client_type(b.kind), gateway_id=b.gateway_id,
    ),
    "cancel_session": lambda b: m.CancelSession(
        session_id=b.session_id, reason=b.reason, requester_id=b.requester_id,
        submit_id=b.submit_id,
    ),
    "device_info_update": lambda b: m.DeviceInfoUpdate(
        device_id=b.device_id, device_info=json_object(b.device_info_json),
    ),
    "ping": lambda b: m.Ping(nonce=b.nonce),
    "hello": lambda b: m.Hello(
        gateway_id=b.gateway_id, clients=tuple(_presence(client) for client in b.clients),
        more=b.more,
    ),
    "presence_page": lambda b: m.PresencePage(
        clients=tuple(_presence(client) for client in b.clients), last=b.last,
    ),
}


def encode_gateway_batch(batch: Iterable[m.GatewayMessage]) -> link_pb2.GatewayBatch:
    """One stream message holding all of ``batch``, however large."""
    out = link_pb2.GatewayBatch()
    for message in batch:
        _encode_gateway(message, out.messages.add())
    return out


def encode_gateway_stream(batch: list[m.GatewayMessage],
                          limit: int = LINK_BATCH_BYTES) -> list[link_pb2.GatewayBatch]:
    """The stream messages that carry a batch of a bounded queue: the batch itself, or
    the fragments of its one message when that is larger than ``limit``."""
    if len(batch) == 1 and size_hint(batch[0]) > limit:
        whole = link_pb2.GatewayMessage()
        _encode_gateway(batch[0], whole)
        return _fragments(whole, limit, link_pb2.GatewayBatch)
    return [encode_gateway_batch(batch)]


def decode_gateway_batch(batch: link_pb2.GatewayBatch,
                         joiner: Reassembly | None = None) -> list[m.GatewayMessage]:
    """The messages of one stream message; fragments go to ``joiner`` (the stream's),
    and the message they make is returned with its last piece.

    :raises FragmentError: the fragments broke the protocol (see :class:`Reassembly`).
    """
    return _decode(batch.messages, _GATEWAY_DECODERS, link_pb2.GatewayMessage, joiner)


# ---------------------------------------------------------------- session -> gateway


def _encode_session(message: m.SessionMessage, item: link_pb2.SessionMessage) -> None:
    """Write ``message`` into ``item``, an empty message of a batch."""
    match message:
        case m.DeviceFrame():
            _fill(item.device_frame, device_id=message.device_id,
                  session_id=message.session_id, frame_json=message.frame_json)
        case m.TaskAccepted():
            _fill(item.task_accepted, submit_id=message.submit_id,
                  session_id=message.session_id, active_sessions=message.active_sessions)
        case m.TaskEnded():
            _fill(item.task_ended, session_id=message.session_id,
                  requester_id=message.requester_id,
                  requester_kind=_REQUESTER_TO_PB[message.requester_kind],
                  device_id=message.device_id, notify_device=message.notify_device,
                  notify_requester=message.notify_requester, frame_json=message.frame_json,
                  active_sessions=message.active_sessions)
        case m.TaskRejected():
            _fill(item.task_rejected, submit_id=message.submit_id,
                  session_id=message.session_id, error=message.error,
                  code=_REJECTION_TO_PB.get(message.code, link_pb2.REJECTION_CODE_UNSPECIFIED))
        case m.SessionOpened():
            _fill(item.session_opened, session_id=message.session_id,
                  task_name=message.task_name, device_id=message.device_id,
                  requester_id=message.requester_id,
                  requester_kind=_REQUESTER_TO_PB[message.requester_kind])
        case m.Pong():
            _fill(item.pong, nonce=message.nonce, active_sessions=message.active_sessions)
        case m.Welcome():
            _fill(item.welcome, replica_id=message.replica_id,
                  active_sessions=message.active_sessions)
        case _:
            raise TypeError(f"not a session -> gateway message: {message!r}")


_SESSION_DECODERS: dict[str, Callable[[Any], m.SessionMessage]] = {
    "device_frame": lambda b: m.DeviceFrame(
        device_id=b.device_id, session_id=b.session_id, frame_json=b.frame_json,
    ),
    "task_accepted": lambda b: m.TaskAccepted(
        submit_id=b.submit_id, session_id=b.session_id, active_sessions=b.active_sessions,
    ),
    "task_ended": lambda b: m.TaskEnded(
        session_id=b.session_id, requester_id=b.requester_id,
        requester_kind=_requester(b.requester_kind), device_id=b.device_id,
        notify_requester=b.notify_requester, notify_device=b.notify_device,
        frame_json=b.frame_json, active_sessions=b.active_sessions,
    ),
    "task_rejected": lambda b: m.TaskRejected(
        submit_id=b.submit_id, session_id=b.session_id, error=b.error,
        # An unknown code is no reason to try elsewhere: the task itself was refused.
        code=_REJECTION_OF_PB.get(b.code, RejectionCode.INVALID),
    ),
    "session_opened": lambda b: m.SessionOpened(
        session_id=b.session_id, task_name=b.task_name, device_id=b.device_id,
        requester_id=b.requester_id, requester_kind=_requester(b.requester_kind),
    ),
    "pong": lambda b: m.Pong(nonce=b.nonce, active_sessions=b.active_sessions),
    "welcome": lambda b: m.Welcome(replica_id=b.replica_id,
                                   active_sessions=b.active_sessions),
}


def encode_session_batch(batch: Iterable[m.SessionMessage]) -> link_pb2.SessionBatch:
    """One stream message holding all of ``batch``, however large."""
    out = link_pb2.SessionBatch()
    for message in batch:
        _encode_session(message, out.messages.add())
    return out


def encode_session_stream(batch: list[m.SessionMessage],
                          limit: int = LINK_BATCH_BYTES) -> list[link_pb2.SessionBatch]:
    """As :func:`encode_gateway_stream`, for what a replica sends."""
    if len(batch) == 1 and size_hint(batch[0]) > limit:
        whole = link_pb2.SessionMessage()
        _encode_session(batch[0], whole)
        return _fragments(whole, limit, link_pb2.SessionBatch)
    return [encode_session_batch(batch)]


def decode_session_batch(batch: link_pb2.SessionBatch,
                         joiner: Reassembly | None = None) -> list[m.SessionMessage]:
    """As :func:`decode_gateway_batch`, for what a replica sends."""
    return _decode(batch.messages, _SESSION_DECODERS, link_pb2.SessionMessage, joiner)


# ---------------------------------------------------------------- fragments


def _fragments(message: Any, limit: int, batch_type: Any) -> list[Any]:
    """``message`` serialized once and cut into stream messages (of ``batch_type``) of
    one fragment each, of at most ``limit`` bytes; none when it is larger than a receiver
    reassembles, since sending it would only make the receiver close the link and fail
    every session on it."""
    data = message.SerializeToString()
    if len(data) > MAX_MESSAGE_BYTES:
        log.error("link message %s of %d bytes exceeds the %d-byte limit: dropped",
                  message.WhichOneof("body"), len(data), MAX_MESSAGE_BYTES)
        return []
    pieces = split(data, limit)
    end = len(pieces) - 1
    stream = []
    for index, piece in enumerate(pieces):
        batch = batch_type()
        _fill(batch.messages.add().fragment, piece=piece, last=index == end)
        stream.append(batch)
    return stream


def _decode(items: Iterable[Any], decoders: dict[str, Callable[[Any], Any]],
            parse: Any, joiner: Reassembly | None) -> list[Any]:
    decoded = []
    for item in items:
        which = item.WhichOneof("body")
        if which == "fragment":
            if joiner is None:
                raise FragmentError("a fragment on a stream that takes none")
            whole = joiner.add(item.fragment.piece, item.fragment.last)
            if whole is None:
                continue
            try:
                item = parse.FromString(whole)
            except DecodeError as exc:
                raise FragmentError(f"a reassembled link message is unreadable: {exc}") from None
            which = item.WhichOneof("body")
            if which == "fragment":
                raise FragmentError("a fragment inside a fragment")
        elif joiner is not None and joiner.incomplete:
            joiner.expect_whole(which or "an empty message")
        decoder = decoders.get(which) if which is not None else None
        if decoder is None:
            log.warning("link message of unknown kind %r skipped", which)
            continue
        decoded.append(decoder(getattr(item, which)))
    return decoded
