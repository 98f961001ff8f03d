"""A scripted OpenAI-compatible endpoint and a tool-serving device, for the llm agent's
tests: the endpoint is a real HTTP server (uvicorn, loopback) that answers
``POST /v1/chat/completions`` from a script and keeps every request it received."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.stack import HOST, Client, free_socket

#: Recognisable, so that any leak of it into a log or a record is found.
FAKE_KEY = "sk-test-FAKE-KEY-7f3a9c1e"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4"
    "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)

TOOLS = {
    "action": [
        {
            "tool_name": "click",
            "namespace": "ui",
            "tool_type": "action",
            "description": "Click at a point of the screen.",
            "input_schema": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            },
        }
    ],
    "data_collection": [
        {
            "tool_name": "screen.capture",
            "namespace": "screen",
            "tool_type": "data_collection",
            "description": "A screenshot of the whole screen.",
            "input_schema": {"type": "object", "properties": {}},
        }
    ],
}


def tool_call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    """A completion whose message calls one tool (``arguments``: text, or JSON-able)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}
            ],
        },
        "tool_calls",
    )


def answer(text: str) -> dict[str, Any]:
    """A completion whose message answers without calling a tool."""
    return completion({"role": "assistant", "content": text}, "stop")


def completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "scripted-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@dataclass
class Status:
    """An HTTP error answer of the script."""

    code: int
    body: dict[str, Any] = field(default_factory=lambda: {"error": {"message": "overloaded"}})


class Hang:
    """A script entry that never answers (until the client gives up)."""


@dataclass
class ScriptedModel:
    """The endpoint: each request takes the next script entry (the last one repeats)."""

    script: list[Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    hanging: int = 0

    async def _completions(self, request: Request) -> JSONResponse:
        self.requests.append(await request.json())
        self.authorizations.append(request.headers.get("authorization", ""))
        entry = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(entry, Hang):
            self.hanging += 1
            await asyncio.sleep(3600)
        if isinstance(entry, Status):
            return JSONResponse(entry.body, status_code=entry.code)
        return JSONResponse(entry)

    async def __aenter__(self) -> ScriptedModel:
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        self._sock = free_socket()
        self.base_url = f"http://{HOST}:{self._sock.getsockname()[1]}/v1"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._sock])
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._task.cancel()
        self._sock.close()


def llm_settings(model: ScriptedModel, **overrides: Any) -> dict[str, Any]:
    """The replica settings that point its llm agent at ``model``."""
    return {
        "llm_base_url": model.base_url,
        "llm_model": "scripted-model",
        "llm_api_key": FAKE_KEY,
        **overrides,
    }


@dataclass
class ToolDevice:
    """A raw device that lists :data:`TOOLS` and answers every other command with
    ``results[tool_name]``; ``commands`` keeps every command it got."""

    client: Client
    client_id: str
    results: dict[str, Any]
    commands: list[dict[str, Any]] = field(default_factory=list)

    async def serve(self) -> None:
        while True:
            command = await self.client.recv_type("command", timeout=60)
            self.commands.append(command)
            action_results = []
            for action in command["actions"]:
                if action["tool_name"] == "list_tools":
                    result = TOOLS[action["parameters"]["tool_type"]]
                else:
                    result = self.results.get(action["tool_name"], "ok")
                action_results.append(
                    {
                        "status": "success",
                        "error": None,
                        "result": result,
                        "namespace": None,
                        "call_id": action["call_id"],
                    }
                )
            await self.client.send(
                {
                    "type": "command_results",
                    "status": "continue",
                    "client_type": "device",
                    "client_id": self.client_id,
                    "session_id": command["session_id"],
                    "prev_response_id": command["response_id"],
                    "action_results": action_results,
                }
            )
