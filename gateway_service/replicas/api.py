"""Calls to the replicas' public gRPC API, answered as plain values.

The gateway asks a replica about a device connected through another gateway
(``GetDevice``) and about a session's outcome (``GetSession``, for
``/api/task_result``). This module is the only one besides the link transport that knows
protobuf, so that the HTTP API and the frame handlers deal in dataclasses alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_wire.vocab import SessionState
from gateway_service.replicas.pool import Replica

log = logging.getLogger("aip.gateway.replicas")

_STATE_OF_PB = {
    session_api_pb2.SESSION_STATE_QUEUED: SessionState.QUEUED,
    session_api_pb2.SESSION_STATE_RUNNING: SessionState.RUNNING,
    session_api_pb2.SESSION_STATE_COMPLETED: SessionState.COMPLETED,
    session_api_pb2.SESSION_STATE_FAILED: SessionState.FAILED,
    session_api_pb2.SESSION_STATE_CANCELLED: SessionState.CANCELLED,
}


class ReplicaApiError(Exception):
    """A replica answered an API call with an error other than "not found"."""

    def __init__(self, replica: Replica, details: str | None) -> None:
        super().__init__(f"Replica {replica.address}: {details}")


@dataclass(frozen=True, slots=True)
class RemoteDevice:
    device_id: str
    gateway_id: str
    #: Whatever JSON the replica holds for it; ``{}`` when it holds none or bad JSON.
    device_info: Any


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """One session's record; ``state`` is ``"unknown"`` for a state this gateway does not
    know. ``result_json`` stays undecoded: only a finished session's result is read."""

    task_name: str
    session_id: str
    device_id: str
    state: str
    created_at: float
    result_json: str
    error: str


def _stub(replica: Replica) -> session_api_pb2_grpc.SessionApiStub:
    channel = replica.transport.channel
    assert channel is not None, "the replica's link was never started"
    return session_api_pb2_grpc.SessionApiStub(channel)


def _info(device: session_api_pb2.Device) -> Any:
    if not device.device_info_json:
        return {}
    try:
        return orjson.loads(device.device_info_json)
    except orjson.JSONDecodeError:
        return {}


async def find_device(replicas: list[Replica], device_id: str, *, own_gateway_id: str,
                      timeout: float) -> RemoteDevice | None:
    """A device connected through another gateway, as the replicas know it.

    Every replica hears every gateway's presence, so the first one that answers is
    enough. ``None`` when no replica knows the device or none answers.
    """
    for replica in replicas:
        try:
            device = await _stub(replica).GetDevice(
                session_api_pb2.GetDeviceRequest(device_id=device_id),
                timeout=timeout,
                metadata=replica.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            log.warning("device lookup on %s failed: %s", replica.address, exc.details())
            continue
        # A stale record of one of our own clients (it just left) is no device.
        if device.gateway_id == own_gateway_id:
            return None
        return RemoteDevice(device.device_id, device.gateway_id, _info(device))
    return None


async def session_by_task_name(replica: Replica, task_name: str) -> SessionOutcome | None:
    """The latest session named ``task_name`` on one replica, ``None`` if it has none.

    :raises ReplicaApiError: the replica failed to answer.
    """
    try:
        info: session_api_pb2.SessionInfo = await _stub(replica).GetSession(
            session_api_pb2.GetSessionRequest(task_name=task_name), timeout=5.0,
            metadata=replica.metadata,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise ReplicaApiError(replica, exc.details()) from None
    return SessionOutcome(
        task_name=info.task_name,
        session_id=info.session_id,
        device_id=info.device_id,
        state=_STATE_OF_PB.get(info.state, "unknown"),
        created_at=info.created_time.ToNanoseconds() / 1e9,
        result_json=info.result_json,
        error=info.error,
    )
