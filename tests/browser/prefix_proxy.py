"""A reverse proxy for tests that serves an upstream under a path prefix, as a site's
proxy would put the console under ``/ops/``: ``/ops/x`` is forwarded as ``/x``, with the
answer (event streams included) passed back as it comes. It tells the upstream nothing
about the prefix, so only relative URLs keep working behind it.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from tests.stack import HOST, free_socket

#: Headers that belong to one hop, not to the request or answer.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host", b"content-length"}
)


class PrefixProxy:
    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream = upstream
        self.prefix = prefix.rstrip("/")
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))
        config = uvicorn.Config(self, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.prefix}/"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # it failed to start: say why
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._task
        await self.client.aclose()
        self.sock.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path: str = scope["path"]
        if not path.startswith(self.prefix + "/"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"outside the prefix"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = self.upstream + path[len(self.prefix) :]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        request = self.client.build_request(scope["method"], target, headers=headers, content=body)
        answer = await self.client.send(request, stream=True)

        async def close_when_gone() -> None:
            message: Message = await receive()
            while message["type"] != "http.disconnect":
                message = await receive()
            await answer.aclose()

        watcher = asyncio.get_running_loop().create_task(close_when_gone())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": [
                        (k, v) for k, v in answer.headers.raw if k.lower() not in HOP_BY_HOP
                    ],
                }
            )
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            await answer.aclose()
