"""Server-sent events: the console's live updates, as ready-rendered HTML.

Two streams. The overview polls the gateway's registry and the session API every
``interval`` seconds and sends a table body only when its HTML changed. A session page's
stream relays the replica's ``WatchSession``: one event per command sent, per results
received and per model turn, each the rendered item, and at the end the whole log once
more from ``GetSession`` (statuses a cancel changed, results that were only in the
store). The page's script swaps the HTML in; it renders nothing itself.

A stream ends when its client goes (Starlette cancels the generator), when the gateway
starts draining, and after ``MAX_STREAM_SECONDS`` in any case: uvicorn waits for every
response to finish before it exits, and an ``EventSource`` reconnects by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson

from aip_grpc import session_api_pb2 as pb
from gateway_service.console import views
from gateway_service.console.render import render
from gateway_service.console.source import NoReplica, Refused, SessionSource

#: Longest life of one stream; the browser reconnects after ``RETRY_MS``.
MAX_STREAM_SECONDS = 300.0
RETRY_MS = 1000
KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: str) -> str:
    """One event in the wire format: every line of ``data`` on a ``data:`` line."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def sse_json(event: str, value: object) -> str:
    return sse(event, orjson.dumps(value).decode())


Snapshot = Callable[[], Awaitable[dict[str, str]]]


async def overview_stream(
    snapshot: Snapshot, *, interval: float, stopping: Callable[[], bool]
) -> AsyncIterator[str]:
    """Each part of ``snapshot()`` (name -> HTML) whenever it changed."""
    yield f"retry: {RETRY_MS}\n\n"
    sent: dict[str, str] = {}
    started = last_write = time.monotonic()
    while not stopping() and time.monotonic() - started < MAX_STREAM_SECONDS:
        parts = await snapshot()
        for name, html in parts.items():
            if sent.get(name) != html:
                sent[name] = html
                last_write = time.monotonic()
                yield sse(name, html)
        if time.monotonic() - last_write > KEEPALIVE_SECONDS:
            last_write = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(interval)


def _command_html(response_id: str, actions_json: str, results_json: str, status: str) -> str:
    command = views.command_view(response_id, actions_json, results_json, status=status)
    return render("_command.html", c=command)


async def _final_log(source: SessionSource, session_id: str) -> str | None:
    try:
        info = await source.session(session_id)
    except (NoReplica, Refused):
        return None
    if info is None:
        return None
    detail = views.session_detail(info)
    return sse_json(
        "log",
        {
            "head": render("_head.html", s=detail.summary),
            "commands": render("_commands.html", commands=detail.commands),
            "turns": render("_turns.html", turns=detail.turns),
            "result": render("_result.html", d=detail),
        },
    )


def _update_events(update: pb.SessionUpdate, actions: dict[str, str]) -> list[str]:
    kind = views.update_kind(update)
    out = []
    if update.HasField("session"):
        out.append(sse("head", render("_head.html", s=views.session_view(update.session))))
    rid = update.response_id
    if kind == "command_sent":
        actions[rid] = update.detail_json
        out.append(
            sse_json(
                "command",
                {
                    "id": rid,
                    "replace": False,
                    "html": _command_html(rid, update.detail_json, "", "sent"),
                },
            )
        )
    elif kind == "results_received" and update.detail_json:
        html = _command_html(rid, actions.get(rid, ""), update.detail_json, "answered")
        out.append(sse_json("command", {"id": rid, "replace": True, "html": html}))
    elif kind == "model_turn":
        turn = views.turn_from_json(update.detail_json)
        if turn is not None:
            out.append(sse_json("turn", {"seq": turn.seq, "html": render("_turn.html", t=turn)}))
    return out


async def _pump(
    source: SessionSource,
    session_id: str,
    queue: asyncio.Queue[pb.SessionUpdate | Exception | None],
) -> None:
    """Move the watch's updates into ``queue``; its end is ``None``, a failure itself."""
    try:
        async for update in source.watch(session_id):
            await queue.put(update)
        await queue.put(None)
    except (NoReplica, Refused) as exc:
        await queue.put(exc)


async def session_stream(
    source: SessionSource, session_id: str, *, stopping: Callable[[], bool]
) -> AsyncIterator[str]:
    """The session's updates as they happen; ``end`` once it ended.

    The watch is read by a task of its own, so that a session that stays quiet (a long
    command) does not keep the stream from noticing a drain or its time running out.
    """
    yield f"retry: {RETRY_MS}\n\n"
    actions: dict[str, str] = {}
    queue: asyncio.Queue[pb.SessionUpdate | Exception | None] = asyncio.Queue()
    pump = asyncio.get_running_loop().create_task(_pump(source, session_id, queue))
    started = time.monotonic()
    try:
        while not stopping() and time.monotonic() - started < MAX_STREAM_SECONDS:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS / 3):
                    item = await queue.get()
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is None:
                return  # the stream broke before the end: the browser reconnects
            if isinstance(item, NoReplica):
                yield sse("problem", f"No session-service replica answered: {item}")
                return
            if isinstance(item, Refused):
                yield sse("problem", item.details)
                yield sse("end", "")
                return
            assert isinstance(item, pb.SessionUpdate)
            for event in _update_events(item, actions):
                yield event
            if views.update_kind(item) == "ended":
                final = await _final_log(source, session_id)
                if final is not None:
                    yield final
                yield sse("end", "")
                return
    finally:
        pump.cancel()
