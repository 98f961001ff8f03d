"""Tracing across the link: the gateway's span of a task is the parent of the replica's
span of its session, whose children are its commands; a backend's ``traceparent`` is
honoured the same way. Spans are read from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aip_grpc import session_api_pb2
from aip_runtime import tracing
from tests.conftest import StackFactory
from tests.stack import (
    answer_commands,
    api_call,
    cmd,
    plan,
    register_constellation,
    register_device,
    task_frame,
    wait_for,
)

pb = session_api_pb2


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str, session_id: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name
            and (span.attributes or {}).get("aip.session_id") == session_id]


async def test_one_trace_from_the_gateway_into_the_replica(
    make_stack: StackFactory, spans: InMemorySpanExporter,
) -> None:
    stack = await make_stack()
    device = await register_device(stack.ws_url, "dev-t")
    requester = await register_constellation(stack.ws_url, "c-t", "dev-t")
    try:
        await requester.send(task_frame("c-t", plan([cmd("a")], [cmd("b")]),
                                        client_type="constellation", target_id="dev-t",
                                        session_id="traced"))
        await answer_commands(device, "dev-t", 2)
        assert (await requester.recv_type("task_end", 10))["status"] == "completed"
        await wait_for(lambda: bool(named(spans, "aip.session", "traced")),
                       what="the session's span ends")
    finally:
        await device.close()
        await requester.close()
    [submit] = named(spans, "aip.task.submit", "traced")
    [session] = named(spans, "aip.session", "traced")
    commands = named(spans, "aip.command", "traced")
    assert submit.context is not None and session.context is not None
    assert session.parent is not None and session.parent.span_id == submit.context.span_id
    assert session.context.trace_id == submit.context.trace_id
    assert (session.attributes or {})["aip.state"] == "completed"
    assert (session.attributes or {})["aip.device_id"] == "dev-t"
    assert [(c.attributes or {})["aip.step"] for c in commands] == [0, 1]
    for command in commands:
        assert command.parent is not None and command.parent.span_id == session.context.span_id
        assert (command.attributes or {})["aip.status"] == "answered"


async def test_a_backend_traceparent_is_the_sessions_parent(
    make_stack: StackFactory, spans: InMemorySpanExporter,
) -> None:
    stack = await make_stack()
    device = await register_device(stack.ws_url, "dev-b")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        await api_call(stack.replica.address, "StartSession", pb.StartSessionRequest(
            device_id="dev-b", request=plan([cmd("a")]), session_id="backend-traced"),
            metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),))
        await answer_commands(device, "dev-b", 1)
        await wait_for(lambda: bool(named(spans, "aip.session", "backend-traced")),
                       what="the session's span ends")
    finally:
        await device.close()
    [session] = named(spans, "aip.session", "backend-traced")
    assert session.context is not None and session.parent is not None
    assert f"{session.context.trace_id:032x}" == trace_id
    assert f"{session.parent.span_id:016x}" == parent_id


def test_an_endpoint_turns_tracing_on_and_shutdown_off() -> None:
    assert not tracing.enabled()
    tracing.configure("127.0.0.1:4317", "aip-test", "one")
    try:
        # No span is made: nothing waits at shutdown on a collector that is not there.
        assert tracing.enabled() and tracing.traceparent() == ""
    finally:
        tracing.shutdown()
    assert not tracing.enabled() and tracing.traceparent() == ""
    assert tracing.parent("junk") is None and tracing.parent("") is None
