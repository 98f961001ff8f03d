"""Prometheus metrics of every call a replica serves, by service, method and status.

A server interceptor wraps each method's handler: it counts calls as they start and as
they end with their status code, and times the unary ones (a stream such as the gateway
link lasts as long as the link, so its duration says nothing about latency). The names
follow the usual gRPC server metrics, under this service's prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

STARTED = Counter("aip_session_grpc_server_started_total",
                  "Calls started on this replica", ["grpc_service", "grpc_method"])
HANDLED = Counter("aip_session_grpc_server_handled_total",
                  "Calls ended on this replica, by status code",
                  ["grpc_service", "grpc_method", "grpc_code"])
HANDLING_SECONDS = Histogram(
    "aip_session_grpc_server_handling_seconds",
    "Time to answer a unary call on this replica",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def split_method(full: str) -> tuple[str, str]:
    """``/aip.v1.SessionApi/StartSession`` as ``("aip.v1.SessionApi", "StartSession")``."""
    service, _, method = full.lstrip("/").partition("/")
    return service or "unknown", method or "unknown"


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return grpc.StatusCode.OK.name
    if isinstance(error, asyncio.CancelledError):  # the client went away
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times the calls of every service of the server it is installed on."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        labels = split_method(handler_call_details.method or "")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, labels),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, labels),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, labels),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, labels),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _unary(behaviour: Callable[..., Any], labels: tuple[str, str]) -> Callable[..., Any]:
    async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        STARTED.labels(*labels).inc()
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behaviour(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - began)
            HANDLED.labels(*labels, _code(context, error)).inc()

    return counted


def _streaming(behaviour: Callable[..., Any], labels: tuple[str, str]) -> Callable[..., Any]:
    async def counted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        STARTED.labels(*labels).inc()
        error: BaseException | None = None
        try:
            produced = behaviour(request, context)
            if hasattr(produced, "__aiter__"):
                async for message in produced:
                    yield message
            else:  # a handler that writes with context.write and returns
                await produced
        except BaseException as exc:
            error = exc
            raise
        finally:
            HANDLED.labels(*labels, _code(context, error)).inc()

    return counted
