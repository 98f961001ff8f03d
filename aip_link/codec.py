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


def _presence_pb(client: m.ClientPresence) -> link_pb2.ClientPresence:
    return link_pb2.ClientPresence(
        client_id=client.client_id,
        kind=_CLIENT_TYPE_TO_PB[client.client_type],
        platform=client.platform,
        device_info_json=client.device_info_json(),
        gateway_id=client.gateway_id,
    )


def _presence(pb: link_pb2.ClientPresence) -> m.ClientPresence:
    return m.ClientPresence(
        client_id=pb.client_id,
        client_type=_client_type(pb.kind),
        platform=pb.platform,
        device_info=json_object(pb.device_info_json),
        gateway_id=pb.gateway_id,
    )


def _encode_gateway(message: m.GatewayMessage) -> link_pb2.GatewayMessage:
    pb = link_pb2.GatewayMessage
    match message:
        case m.CommandResults():
            return pb(command_results=link_pb2.CommandResults(
                session_id=message.session_id, device_id=message.device_id,
                response_id=message.response_id, frame_json=message.frame_json,
            ))
        case m.TaskSubmit():
            return pb(task_submit=link_pb2.TaskSubmit(
                submit_id=message.submit_id, session_id=message.session_id,
                task_name=message.task_name, request=message.request,
                requester_id=message.requester_id,
                requester_kind=_REQUESTER_TO_PB[message.requester_kind],
                device_id=message.device_id, gateway_id=message.gateway_id,
                agent=message.agent, model=message.model,
                traceparent=message.traceparent,
            ))
        case m.ClientOnline():
            return pb(client_online=link_pb2.ClientOnline(client=_presence_pb(message.client)))
        case m.ClientOffline():
            return pb(client_offline=link_pb2.ClientOffline(
                client_id=message.client_id, kind=_CLIENT_TYPE_TO_PB[message.client_type],
                gateway_id=message.gateway_id,
            ))
        case m.CancelSession():
            return pb(cancel_session=link_pb2.CancelSession(
                session_id=message.session_id, reason=message.reason,
                requester_id=message.requester_id, submit_id=message.submit_id,
            ))
        case m.DeviceInfoUpdate():
            return pb(device_info_update=link_pb2.DeviceInfoUpdate(
                device_id=message.device_id, device_info_json=message.device_info_json(),
            ))
        case m.Ping():
            return pb(ping=link_pb2.Ping(nonce=message.nonce))
        case m.Hello():
            return pb(hello=link_pb2.Hello(
                gateway_id=message.gateway_id,
                clients=[_presence_pb(client) for client in message.clients],
                more=message.more,
            ))
        case m.PresencePage():
            return pb(presence_page=link_pb2.PresencePage(
                clients=[_presence_pb(client) for client in message.clients],
                last=message.last,
            ))
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
    return link_pb2.GatewayBatch(messages=[_encode_gateway(message) for message in batch])


def encode_gateway_stream(batch: list[m.GatewayMessage],
                          limit: int = LINK_BATCH_BYTES) -> list[link_pb2.GatewayBatch]:
    """The stream messages that carry a batch of a bounded queue: the batch itself, or
    the fragments of its one message when that is larger than ``limit``."""
    if len(batch) == 1 and size_hint(batch[0]) > limit:
        return [link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(fragment=piece)])
                for piece in _fragments(_encode_gateway(batch[0]), limit)]
    return [encode_gateway_batch(batch)]


def decode_gateway_batch(batch: link_pb2.GatewayBatch,
                         joiner: Reassembly | None = None) -> list[m.GatewayMessage]:
    """The messages of one stream message; fragments go to ``joiner`` (the stream's),
    and the message they make is returned with its last piece.

    :raises FragmentError: the fragments broke the protocol (see :class:`Reassembly`).
    """
    return _decode(batch.messages, _GATEWAY_DECODERS, link_pb2.GatewayMessage, joiner)


# ---------------------------------------------------------------- session -> gateway


def _encode_session(message: m.SessionMessage) -> link_pb2.SessionMessage:
    pb = link_pb2.SessionMessage
    match message:
        case m.DeviceFrame():
            return pb(device_frame=link_pb2.DeviceFrame(
                device_id=message.device_id, session_id=message.session_id,
                frame_json=message.frame_json,
            ))
        case m.TaskAccepted():
            return pb(task_accepted=link_pb2.TaskAccepted(
                submit_id=message.submit_id, session_id=message.session_id,
                active_sessions=message.active_sessions,
            ))
        case m.TaskEnded():
            return pb(task_ended=link_pb2.TaskEnded(
                session_id=message.session_id, requester_id=message.requester_id,
                requester_kind=_REQUESTER_TO_PB[message.requester_kind],
                device_id=message.device_id, notify_device=message.notify_device,
                notify_requester=message.notify_requester, frame_json=message.frame_json,
                active_sessions=message.active_sessions,
            ))
        case m.TaskRejected():
            return pb(task_rejected=link_pb2.TaskRejected(
                submit_id=message.submit_id, session_id=message.session_id,
                error=message.error, code=_REJECTION_TO_PB.get(
                    message.code, link_pb2.REJECTION_CODE_UNSPECIFIED),
            ))
        case m.SessionOpened():
            return pb(session_opened=link_pb2.SessionOpened(
                session_id=message.session_id, task_name=message.task_name,
                device_id=message.device_id, requester_id=message.requester_id,
                requester_kind=_REQUESTER_TO_PB[message.requester_kind],
            ))
        case m.Pong():
            return pb(pong=link_pb2.Pong(nonce=message.nonce,
                                         active_sessions=message.active_sessions))
        case m.Welcome():
            return pb(welcome=link_pb2.Welcome(replica_id=message.replica_id,
                                               active_sessions=message.active_sessions))
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
    return link_pb2.SessionBatch(messages=[_encode_session(message) for message in batch])


def encode_session_stream(batch: list[m.SessionMessage],
                          limit: int = LINK_BATCH_BYTES) -> list[link_pb2.SessionBatch]:
    """As :func:`encode_gateway_stream`, for what a replica sends."""
    if len(batch) == 1 and size_hint(batch[0]) > limit:
        return [link_pb2.SessionBatch(messages=[link_pb2.SessionMessage(fragment=piece)])
                for piece in _fragments(_encode_session(batch[0]), limit)]
    return [encode_session_batch(batch)]


def decode_session_batch(batch: link_pb2.SessionBatch,
                         joiner: Reassembly | None = None) -> list[m.SessionMessage]:
    """As :func:`decode_gateway_batch`, for what a replica sends."""
    return _decode(batch.messages, _SESSION_DECODERS, link_pb2.SessionMessage, joiner)


# ---------------------------------------------------------------- fragments


def _fragments(message: Any, limit: int) -> list[link_pb2.Fragment]:
    """``message`` serialized once and cut into fragments of at most ``limit`` bytes;
    none when it is larger than a receiver reassembles, since sending it would only make
    the receiver close the link and fail every session on it."""
    data = message.SerializeToString()
    if len(data) > MAX_MESSAGE_BYTES:
        log.error("link message %s of %d bytes exceeds the %d-byte limit: dropped",
                  message.WhichOneof("body"), len(data), MAX_MESSAGE_BYTES)
        return []
    pieces = split(data, limit)
    end = len(pieces) - 1
    return [link_pb2.Fragment(piece=piece, last=index == end)
            for index, piece in enumerate(pieces)]


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
