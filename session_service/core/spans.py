"""The session's span: opened when its agent starts, as the child of its submitter's
span when one came with it, current in the session's task (its commands' spans are its
children), closed with the session's end. Used only while tracing is on."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from aip_runtime import tracing
from aip_wire.vocab import SessionState
from session_service.core.lifecycle import Ended
from session_service.core.session import Session


def session_started(session: Session) -> Span:
    """Open the session's span and make it current in the running context (the caller
    runs in the session's own context, which its task copies)."""
    span = tracing.tracer().start_span(
        "aip.session", context=tracing.parent(session.traceparent), attributes={
            "aip.session_id": session.session_id, "aip.device_id": session.device_id,
            "aip.requester_id": session.requester_id, "aip.agent": session.agent_name,
        })
    otel_context.attach(trace.set_span_in_context(span))
    return span


def session_ended(span: Span, ended: Ended) -> None:
    span.set_attribute("aip.state", str(ended.state))
    if ended.cancel_reason:
        span.set_attribute("aip.cancel_reason", ended.cancel_reason)
    if ended.state != SessionState.COMPLETED:
        span.set_status(Status(StatusCode.ERROR, ended.error or str(ended.state)))
    span.end()
