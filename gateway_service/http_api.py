"""The HTTP API, compatible with the reference server's ``/api`` routes.

``POST /api/dispatch`` starts a session on a connected device, ``GET /api/clients`` lists
who is connected, ``GET /api/task_result/{task_name}`` reads a session's outcome from
the replicas, ``GET /api/health`` reports the gateway and its links. When an API key is
configured every route but health requires it in ``X-API-Key``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from typing import Any

import grpc
import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field

from aip_grpc import session_api_pb2
from aip_wire.frames import dumps
from aip_wire.names import new_task_name, task_name_problem
from gateway_service.gateway import Gateway
from gateway_service.link import ReplicaLink
from gateway_service.routing import HTTP_REQUESTER, TaskError
from gateway_service.rules import TaskPlan

STARTED_AT = time.time()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def require_api_key(
    request: Request, x_api_key: str | None = Header(default=None, alias="X-API-Key")
) -> None:
    expected = _gateway(request).settings.api_key
    if not expected:
        return
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="Invalid or missing API key")


class DispatchBody(BaseModel):
    client_id: str = Field(min_length=1, description="The device that runs the task.")
    request: str | dict[str, Any] | list[Any] = Field(description="The task: a JSON plan.")
    task_name: str | None = None
    session_id: str | None = None


router = APIRouter(prefix="/api")
protected = [Depends(require_api_key)]


@router.post("/dispatch", dependencies=protected)
async def dispatch(body: DispatchBody, request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    if body.task_name is not None:
        problem = task_name_problem(body.task_name)
        if problem is not None:
            raise HTTPException(status_code=400, detail=f"Invalid task_name: {problem}")
    task_text = body.request if isinstance(body.request, str) else dumps(body.request)
    if isinstance(task_text, bytes):
        task_text = task_text.decode()
    if not task_text.strip():
        raise HTTPException(status_code=400, detail="request must not be empty")
    if body.session_id is not None and not body.session_id:
        raise HTTPException(status_code=400, detail="session_id must not be empty")
    if not await gateway.device_connected(body.client_id):
        raise HTTPException(status_code=404, detail=f"Client '{body.client_id}' is not online")
    plan = TaskPlan(
        session_id=body.session_id or str(uuid.uuid4()),
        task_name=body.task_name or new_task_name(),
        request=task_text,
        device_id=body.client_id,
    )
    try:
        session_id = await gateway.router.submit_task(plan, HTTP_REQUESTER)
    except TaskError as exc:
        raise HTTPException(status_code=exc.http_status, detail=str(exc)) from None
    return {
        "status": "dispatched",
        "task_name": plan.task_name,
        "client_id": body.client_id,
        "session_id": session_id,
    }


@router.get("/clients", dependencies=protected)
async def clients(request: Request) -> dict[str, Any]:
    connected = list(_gateway(request).registry)
    return {
        "online_clients": [conn.client_id for conn in connected],
        "clients": [conn.describe() for conn in connected],
    }


_STATE_NAMES = {
    session_api_pb2.SESSION_STATE_RUNNING: "running",
    session_api_pb2.SESSION_STATE_COMPLETED: "completed",
    session_api_pb2.SESSION_STATE_FAILED: "failed",
    session_api_pb2.SESSION_STATE_CANCELLED: "cancelled",
}


async def _session_by_task_name(
    link: ReplicaLink, task_name: str
) -> session_api_pb2.SessionInfo | None:
    """The latest session named ``task_name`` on one replica, ``None`` if it has none."""
    assert link.api is not None
    try:
        info: session_api_pb2.SessionInfo = await link.api.GetSession(
            session_api_pb2.GetSessionRequest(task_name=task_name), timeout=5.0,
            metadata=link.metadata,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise HTTPException(
            status_code=502, detail=f"Replica {link.address}: {exc.details()}"
        ) from None
    return info


@router.get("/task_result/{task_name}", dependencies=protected)
async def task_result(task_name: str, request: Request) -> dict[str, Any]:
    problem = task_name_problem(task_name)
    if problem is not None:
        raise HTTPException(status_code=400, detail=f"Invalid task_name: {problem}")
    gateway = _gateway(request)
    links = gateway.healthy_links()
    if not links:
        raise HTTPException(status_code=503, detail="No session service replica is reachable")
    # Every replica is asked at once: the record may be on any of them.
    answers = await asyncio.gather(
        *(_session_by_task_name(link, task_name) for link in links)
    )
    found = [info for info in answers if info is not None]
    if not found:
        raise HTTPException(status_code=404, detail=f"No task named '{task_name}'")
    info = max(found, key=lambda item: item.created_at)
    state = _STATE_NAMES.get(info.state, "unknown")
    answer: dict[str, Any] = {
        "task_name": info.task_name,
        "session_id": info.session_id,
        "client_id": info.device_id,
        "state": state,
    }
    if info.state == session_api_pb2.SESSION_STATE_RUNNING:
        answer["status"] = "pending"
        return answer
    answer["status"] = "done"
    answer["result"] = orjson.loads(info.result_json) if info.result_json else None
    answer["error"] = info.error or None
    return answer


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    healthy = gateway.healthy_links()
    return {
        "status": "healthy" if healthy else "degraded",
        "gateway_id": gateway.gateway_id,
        "online_clients": [conn.client_id for conn in gateway.registry],
        "active_sessions": len(gateway.routes),
        "uptime_seconds": round(time.time() - STARTED_AT, 3),
        "replicas": [
            {
                "address": link.address,
                "healthy": link.healthy,
                "replica_id": link.replica_id,
                "active_sessions": link.active_sessions,
                "draining": link.draining,
                "last_error": link.last_error or None,
            }
            for link in gateway.links
        ],
    }
