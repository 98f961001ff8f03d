"""The console's routes: pages at ``/`` and ``/sessions/{id}``, the login, the event
streams and JSON under ``/console/``, and the two actions (start, cancel).

Every URL a page uses is relative to the page (``base`` is ``""`` at the root and one
``../`` per level below), so the console works unchanged under any path prefix a reverse
proxy gives it. The pages without the key show the login form and nothing else; every
data and action route answers 401 without it. The HTTP statuses of the session API's
refusals are chosen here alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Literal
from urllib.parse import parse_qs

import grpc
import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from gateway_service.console import auth, views
from gateway_service.console.events import overview_stream, session_stream
from gateway_service.console.render import render
from gateway_service.console.source import NoReplica, Refused
from gateway_service.console.state import Console, Filters
from gateway_service.http_guard import api_key_valid

router = APIRouter(include_in_schema=False)
protected = [Depends(auth.require_key)]

#: Content-Security-Policy of every page: nothing from elsewhere, no inline script;
#: images may be data URLs (screenshots in results).
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

#: What a page may give as its ``base``: its depth below the console's root.
PAGE_DEPTH = re.compile(r"(?:\.\./)*")

STATUS_OF_CODE = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 502,  # the gateway's --session-token, not the user's
    grpc.StatusCode.PERMISSION_DENIED: 502,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _page(template: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("base", "")
    html = render(template, key_required=bool(auth.configured_key(request)), **context)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def _failed(exc: NoReplica | Refused) -> HTTPException:
    if isinstance(exc, NoReplica):
        return HTTPException(503, f"No session-service replica answered: {exc}")
    return HTTPException(STATUS_OF_CODE.get(exc.code, 502), exc.details)


def _filters(request: Request) -> Filters:
    params = request.query_params
    return Filters(
        state=params.get("state", "").strip(),
        device=params.get("device", "").strip(),
        query=params.get("q", "").strip(),
    )


def _events(stream: Any) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ---------------------------------------------------------------- pages


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> HTMLResponse:
    if not auth.allowed(request):
        return _page("login.html", request)
    console = _console(request)
    filters = _filters(request)
    seen = await console.overview(filters)
    return _page(
        "overview.html",
        request,
        overview=seen,
        filters=filters,
        states=views.session_states(),
        problem=seen.problem,
    )


def _session_base(session_id: str) -> str:
    return "../" * (1 + session_id.count("/"))


@router.get("/sessions/{session_id:path}", response_class=HTMLResponse)
async def session_page(session_id: str, request: Request) -> HTMLResponse:
    base = _session_base(session_id)
    if not auth.allowed(request):
        return _page("login.html", request, base=base)
    try:
        info = await _console(request).source.session(session_id)
    except (NoReplica, Refused) as exc:
        failure = _failed(exc)
        return _page(
            "problem.html", request, failure.status_code, base=base, problem=failure.detail
        )
    if info is None:
        return _page("problem.html", request, 404, base=base, problem=f"No session {session_id!r}")
    return _page("session.html", request, base=base, d=views.session_detail(info))


@router.post("/login")
async def login(request: Request) -> Any:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0]
    expected = auth.configured_key(request)
    if expected and not api_key_valid(expected, key):
        return _page("login.html", request, 401, error="That is not the API key.")
    response = RedirectResponse("./", status_code=303)
    if expected:
        auth.remember(response, request, key)
    return response


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    response = RedirectResponse("./", status_code=303)
    auth.forget(response, request)
    return response


# ---------------------------------------------------------------- live updates


@router.get("/console/events", dependencies=protected)
async def overview_events(request: Request) -> StreamingResponse:
    console = _console(request)
    filters = _filters(request)
    base = request.query_params.get("base", "")
    if not PAGE_DEPTH.fullmatch(base):  # only "", "../", "../../"...: the page's depth
        base = ""
    return _events(
        overview_stream(
            lambda: console.parts(filters, base),
            interval=console.interval,
            stopping=console.stopping,
        )
    )


@router.get("/console/sessions/{session_id:path}/events", dependencies=protected)
async def session_events(session_id: str, request: Request) -> StreamingResponse:
    console = _console(request)
    return _events(session_stream(console.source, session_id, stopping=console.stopping))


# ---------------------------------------------------------------- JSON and actions


@router.get("/console/api/devices", dependencies=protected)
async def devices(request: Request) -> JSONResponse:
    rows, problem = await _console(request).devices()
    return JSONResponse({"devices": [asdict(row) for row in rows], "problem": problem})


@router.get("/console/api/sessions", dependencies=protected)
async def sessions(request: Request) -> JSONResponse:
    seen = await _console(request).overview(_filters(request))
    return JSONResponse(
        {"sessions": [asdict(row) for row in seen.sessions], "problem": seen.problem}
    )


class StartBody(BaseModel):
    device_id: str = Field(min_length=1)
    request: str = Field(min_length=1, description="A JSON plan, or a task in words.")
    kind: Literal["plan", "task"] = "plan"
    model: str = Field("", max_length=200)


async def _start_body(request: Request) -> StartBody:
    # Read here, after the key was checked: a body parameter would be read (up to
    # --max-body-bytes) before any dependency runs, for callers without the key too.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "Send the session as application/json")
    try:
        return StartBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, jsonable_encoder(exc.errors(include_url=False))) from None


@router.post("/console/api/sessions", dependencies=protected)
async def start(request: Request) -> dict[str, str]:
    body = await _start_body(request)
    if body.kind == "plan":
        try:
            orjson.loads(body.request)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"The plan is not JSON: {exc}") from None
    try:
        info = await _console(request).source.start(
            body.device_id,
            body.request,
            agent="plan" if body.kind == "plan" else "llm",
            model=body.model,
        )
    except (NoReplica, Refused) as exc:
        raise _failed(exc) from None
    return {"session_id": info.session_id, "state": views.session_view(info).state}


@router.post("/console/api/sessions/{session_id:path}/cancel", dependencies=protected)
async def cancel(session_id: str, request: Request) -> dict[str, str]:
    try:
        info = await _console(request).source.cancel(session_id)
    except (NoReplica, Refused) as exc:
        raise _failed(exc) from None
    return {"session_id": info.session_id, "state": views.session_view(info).state}
