"""Baseline servers, measured in the same run on the same machine as the real services.

Run as ``python -m bench.baselines KIND --port PORT [--grpc HOST:PORT]``, one process each:

``ws``
    A bare WebSocket echo at ``/ws`` on the gateway's own stack: FastAPI under uvicorn
    with the very :class:`uvicorn.Config` the gateway builds (``uvicorn_config``: same
    WebSocket implementation, ping, size and per-message-deflate settings, same event
    loop choice), only the application swapped. The round trip a gateway cannot beat.
``grpc``
    A bare grpc.aio bidirectional echo stream (raw bytes, no protobuf) with the session
    service's server options, on uvloop like the session service: the gRPC hop alone.
``chain``
    The minimal WS -> FastAPI -> grpc.aio bidi -> second process -> back chain: the ``ws``
    server that forwards each message over one shared stream to a ``grpc`` echo server and
    sends the answer back; frames queued while a write is in flight are coalesced into one
    stream message, as the gateway's link does. What a gateway plus link costs before any
    AIP logic.
``websockets``
    A bare ``websockets`` (asyncio) echo server, the per-connection memory floor.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from aip_runtime.fd_limit import raise_fd_limit
from aip_runtime.gc_tuning import tune_gc
from bench.common import ECHO_METHOD, HOST


def uvicorn_config_for(app: Any, port: int) -> uvicorn.Config:
    """The gateway's uvicorn configuration, with ``app`` in place of the gateway."""
    from gateway_service.__main__ import uvicorn_config
    from gateway_service.settings import GatewaySettings

    config = uvicorn_config(GatewaySettings(host=HOST, port=port, log_level="warning"))
    config.app = app
    return config


def _as_registered(websocket: WebSocket) -> None:
    """Lift the gateway protocol's pre-registration size limit, as a registration does:
    the baselines have no registration, and their clients send full-size frames."""
    from gateway_service.ws_protocol import REGISTERED_EXTENSION

    mark = (websocket.scope.get("extensions") or {}).get(REGISTERED_EXTENSION)
    if mark is not None:
        mark()


async def _echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    _as_registered(websocket)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except (WebSocketDisconnect, RuntimeError):
        return


def ws_echo_app() -> FastAPI:
    app = FastAPI()
    app.add_api_websocket_route("/ws", _echo_socket)
    return app


def chain_app(grpc_address: str) -> FastAPI:
    """WS frames forwarded one by one over a single shared bidi stream and back."""
    from aip_link.channel import CHANNEL_OPTIONS

    pending: dict[bytes, asyncio.Future[bytes]] = {}
    outgoing: asyncio.Queue[bytes] = asyncio.Queue()
    serials = itertools.count()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(grpc_address, options=CHANNEL_OPTIONS)
        call = channel.stream_stream(ECHO_METHOD)()

        async def writer() -> None:
            # Like the gateway's link: whatever is queued goes out as one stream message.
            while True:
                batch = [await outgoing.get()]
                while not outgoing.empty():
                    batch.append(outgoing.get_nowait())
                await call.write(b"".join(batch))

        async def reader() -> None:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                view, offset = memoryview(message), 0
                while offset < len(view):
                    key = bytes(view[offset: offset + 8])
                    size = int.from_bytes(view[offset + 8: offset + 12], "big")
                    body = bytes(view[offset + 12: offset + 12 + size])
                    offset += 12 + size
                    future = pending.pop(key, None)
                    if future is not None and not future.done():
                        future.set_result(body)

        tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await channel.close()

    async def forward(websocket: WebSocket) -> None:
        await websocket.accept()
        _as_registered(websocket)
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                data = text.encode() if text is not None else (message.get("bytes") or b"")
                key = next(serials).to_bytes(8, "big")
                future: asyncio.Future[bytes] = loop.create_future()
                pending[key] = future
                outgoing.put_nowait(key + len(data).to_bytes(4, "big") + data)
                answer = await future
                await websocket.send_text(answer.decode())
        except (WebSocketDisconnect, RuntimeError):
            return

    app = FastAPI(lifespan=lifespan)
    app.add_api_websocket_route("/ws", forward)
    return app


async def serve_grpc_echo(port: int) -> None:
    from aip_link.channel import SERVER_OPTIONS

    async def echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    if not server.add_insecure_port(f"{HOST}:{port}"):
        raise OSError(f"cannot listen on {HOST}:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_websockets_echo(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, HOST, port, compression=None, max_size=None) as server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=["ws", "grpc", "chain", "websockets"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc", default="", help="echo server for the chain, HOST:PORT")
    args = parser.parse_args(argv)
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tune_gc()  # the services' process settings, as for everything else they share
    if args.kind in ("ws", "chain"):
        app = ws_echo_app() if args.kind == "ws" else chain_app(args.grpc)
        uvicorn.Server(uvicorn_config_for(app, args.port)).run()
        return
    import uvloop

    serve = serve_grpc_echo if args.kind == "grpc" else serve_websockets_echo
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
