"""What an HTTP API request must pass before its body is read: the API key, and a size.

FastAPI reads and parses a request's body before its dependencies run, so a client with
no key could make the gateway read (and hold) a body of any size before hearing 401.
This ASGI middleware answers first: 401 for a protected route without a valid
``X-API-Key``; 413 for a body over ``max_body_bytes``, from its Content-Length before any
of it is read, or, for a chunked body, as soon as the bytes received go past the limit.
"""

from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Routes any caller may read (it tells only whether the gateway is healthy).
OPEN_PATHS = frozenset({"/api/health", "/api/health/live", "/api/health/ready"})


def api_key_valid(expected: str | None, presented: str | None) -> bool:
    """Whether ``presented`` opens the API (any value does when no key is configured)."""
    if not expected:
        return True
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def is_protected(path: str) -> bool:
    return path.startswith("/api/") and path not in OPEN_PATHS


class BodyTooLarge(HTTPException):
    """A streamed body went past the limit while the application read it: an HTTP
    error, so that the framework answers it as such (413) rather than as a bad body."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"Request body over {limit} bytes")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpGuard:
    """The middleware: see the module documentation."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if is_protected(scope["path"]) and not api_key_valid(
            self.api_key, _header(scope, b"x-api-key")
        ):
            await _answer(send, 401, "Invalid or missing API key")
            return
        limit = self.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                await _answer(send, 400, "Invalid Content-Length")
                return
            if announced > limit:
                await _answer(send, 413, f"Request body over {limit} bytes")
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, f"Request body over {limit} bytes")
