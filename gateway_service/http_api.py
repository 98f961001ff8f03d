"""The HTTP API, compatible with the reference server's ``/api`` routes.

``POST /api/dispatch`` starts a session on a connected device, ``GET /api/clients`` lists
who is connected, ``GET /api/task_result/{task_name}`` reads a session's outcome from
the replicas, ``GET /api/health`` reports the gateway and its links, ``/api/health/live``
and ``/api/health/ready`` answer probes. When an API key is configured every route but
the health ones requires it in ``X-API-Key``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aip_wire.frames import dumps
from aip_wire.names import task_name_problem
from aip_wire.vocab import LIVE_STATES, RejectionCode
from gateway_service.gateway import Gateway
from gateway_service.http_guard import api_key_valid
from gateway_service.replicas import api
from gateway_service.replicas.api import ReplicaApiError, SessionOutcome
from gateway_service.replicas.pool import Replica
from gateway_service.rules import (
    HTTP_TASKS,
    Refusal,
    RefusalCode,
    TaskAsk,
    check_device,
    plan_task,
)
from gateway_service.sessions import HTTP_REQUESTER

STARTED_AT = time.time()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def require_api_key(
    request: Request, x_api_key: str | None = Header(default=None, alias="X-API-Key")
) -> None:
    # HttpGuard refused a missing key before the body was read; this stays for an
    # application mounted without it.
    if not api_key_valid(_gateway(request).settings.api_key, x_api_key):
        raise HTTPException(status_code=401, detail="Invalid or missing API key")


class DispatchBody(BaseModel):
    client_id: str = Field(min_length=1, description="The device that runs the task.")
    request: str | dict[str, Any] | list[Any] = Field(
        description="The task: a JSON plan, or words for the llm agent.")
    task_name: str | None = None
    session_id: str | None = None
    agent: Literal["plan", "llm"] | None = Field(
        None, description="The agent that runs the task; by default the replica chooses "
        "by the request (a JSON plan: plan, words: llm when configured).")
    model: str | None = Field(None, max_length=200,
                              description="The llm agent's model for this task.")


#: The ``/api`` routes; FastAPI calls such a collection a router.
api_routes = APIRouter(prefix="/api")
protected = [Depends(require_api_key)]


#: The HTTP status for each reason a task is refused: chosen here alone. A code the
#: replicas may add later is a conflict until it gets its own.
STATUS_OF_REFUSAL: dict[RefusalCode | RejectionCode, int] = {
    RejectionCode.EXISTS: 409,
    RejectionCode.NOT_FOUND: 404,
    RejectionCode.INVALID: 400,
    RejectionCode.LIMIT: 429,
    RejectionCode.DRAINING: 503,
    RejectionCode.UNAVAILABLE: 503,
    RejectionCode.TIMEOUT: 504,
}


def _refused(refusal: Refusal) -> HTTPException:
    status = STATUS_OF_REFUSAL.get(refusal.code, 409)
    return HTTPException(status_code=status, detail=refusal.reason)


@api_routes.post("/dispatch", dependencies=protected)
async def dispatch(body: DispatchBody, request: Request) -> dict[str, Any]:
    gateway = _gateway(request)
    task_text = body.request if isinstance(body.request, str) else dumps(body.request)
    if isinstance(task_text, bytes):
        task_text = task_text.decode()
    ask = TaskAsk(task_text, body.task_name, body.session_id, target_id=body.client_id)
    try:
        plan = replace(plan_task(ask, HTTP_REQUESTER.client_id, HTTP_REQUESTER.kind,
                                 HTTP_TASKS), agent=body.agent or "", model=body.model or "")
        check_device(plan, await gateway.device_connected(plan.device_id), HTTP_TASKS)
        session_id = await gateway.sessions.submit(plan, HTTP_REQUESTER)
    except Refusal as refusal:
        raise _refused(refusal) from None
    return {
        "status": "dispatched",
        "task_name": plan.task_name,
        "client_id": body.client_id,
        "session_id": session_id,
    }


@api_routes.get("/clients", dependencies=protected)
async def clients(request: Request) -> dict[str, Any]:
    connected = list(_gateway(request).registry)
    return {
        "online_clients": [conn.client_id for conn in connected],
        "clients": [conn.describe() for conn in connected],
    }


async def _session_by_task_name(replica: Replica, task_name: str) -> SessionOutcome | None:
    try:
        return await api.session_by_task_name(replica, task_name)
    except ReplicaApiError as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from None


@api_routes.get("/task_result/{task_name}", dependencies=protected)
async def task_result(task_name: str, request: Request) -> dict[str, Any]:
    problem = task_name_problem(task_name)
    if problem is not None:
        raise HTTPException(status_code=400, detail=f"Invalid task_name: {problem}")
    gateway = _gateway(request)
    replicas = gateway.healthy_links()
    if not replicas:
        raise HTTPException(status_code=503, detail="No session service replica is reachable")
    # Every replica is asked at once: the record may be on any of them.
    answers = await asyncio.gather(
        *(_session_by_task_name(replica, task_name) for replica in replicas)
    )
    found = [info for info in answers if info is not None]
    if not found:
        raise HTTPException(status_code=404, detail=f"No task named '{task_name}'")
    info = max(found, key=lambda item: item.created_at)
    answer: dict[str, Any] = {
        "task_name": info.task_name,
        "session_id": info.session_id,
        "client_id": info.device_id,
        "state": info.state,
    }
    if info.state in LIVE_STATES:
        answer["status"] = "pending"
        return answer
    answer["status"] = "done"
    answer["result"] = orjson.loads(info.result_json) if info.result_json else None
    answer["error"] = info.error or None
    return answer


@api_routes.get("/health/live")
async def health_live() -> dict[str, str]:
    """Liveness: the process serves HTTP (an orchestrator restarts it when this fails)."""
    return {"status": "alive"}


@api_routes.get("/health/ready")
async def health_ready(request: Request) -> JSONResponse:
    """Readiness: 200 while the gateway can take work (a replica link is up and it is
    not draining), 503 otherwise, so a balancer sends clients elsewhere."""
    gateway = _gateway(request)
    problem = readiness_problem(draining=gateway.draining,
                                healthy_links=len(gateway.healthy_links()))
    if problem is None:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not_ready", "reason": problem}, status_code=503)


def readiness_problem(*, draining: bool, healthy_links: int) -> str | None:
    """Why the gateway is not ready (``None``: it is)."""
    if draining:
        return "draining"
    if healthy_links == 0:
        return "no session-service replica link is up"
    return None


@api_routes.get("/health")
async def health(
    request: Request, x_api_key: str | None = Header(default=None, alias="X-API-Key")
) -> dict[str, Any]:
    gateway = _gateway(request)
    status = "healthy" if gateway.healthy_links() else "degraded"
    if gateway.settings.api_key and not api_key_valid(gateway.settings.api_key, x_api_key):
        # Anyone may ask whether the gateway is up; who is connected is for key holders.
        return {"status": status}
    return {
        "status": status,
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
