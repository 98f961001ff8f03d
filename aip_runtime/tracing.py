"""OpenTelemetry tracing, off unless ``--otlp-endpoint`` names a collector.

One task can be followed from the gateway into the replica and back: the gateway opens
a span when it submits a task and sends its W3C ``traceparent`` along with the task over
the link; the replica runs the session in a span that is its child, and each command in
a span of its own under the session's. A backend calling ``StartSession`` may send a
``traceparent`` in its call metadata for the same effect.

Both services use the tracer of :func:`use`, never the global provider: a process that
does not trace pays nothing on its hot paths (:func:`enabled` is false and no span
object is made), and tests give a provider with an in-memory exporter to one stack
without touching the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("aip.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def configure(endpoint: str, service_name: str, instance_id: str) -> None:
    """Export spans to the OTLP/gRPC collector at ``endpoint`` (``host:port`` or a URL);
    ``""`` leaves tracing off."""
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({
        "service.name": service_name, "service.instance.id": instance_id}))
    insecure = not endpoint.startswith("https://")
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=insecure)))
    use(provider)
    log.info("tracing: spans go to %s (OTLP/gRPC)", endpoint)


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` from now on (``None``: stop tracing)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("aip") if provider is not None else None


def shutdown() -> None:
    """Send what is buffered and stop (at the end of the process)."""
    if _provider is not None:
        _provider.shutdown()
    use(None)


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer:
    """The tracer in use; callers check :func:`enabled` first."""
    if _tracer is None:
        raise RuntimeError("tracing is off")
    return _tracer


def traceparent(span: Span | None = None) -> str:
    """The W3C ``traceparent`` of ``span`` (default: the current one), ``""`` if none."""
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get("traceparent", "")


def parent(value: str) -> Context | None:
    """The context a received ``traceparent`` names (``None`` for ``""`` or junk: the
    span then starts a trace of its own)."""
    if not value:
        return None
    context = _PROPAGATOR.extract({"traceparent": value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def from_metadata(metadata: Any) -> str:
    """The ``traceparent`` among gRPC call metadata, ``""`` if absent."""
    items: Any = metadata.items() if isinstance(metadata, Mapping) else metadata or ()
    for key, value in items:
        if key == "traceparent" and isinstance(value, str):
            return value
    return ""
