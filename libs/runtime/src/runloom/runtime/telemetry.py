"""OpenTelemetry: W3C trace context carried in NATS headers across every hop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

_configured = False


def setup_tracing(service: str, exporter: str = "none") -> None:
    """Install a tracer provider once per process. `exporter`: none | console."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"runloom-{service}"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current span's traceparent (and tracestate)."""
    out: dict[str, str] = dict(headers or {})
    inject(out)
    return out


def context_from_headers(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context a message carried, to parent the consumer's span."""
    return extract(dict(headers or {}))


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    return extract({"traceparent": traceparent} if traceparent else {})


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x")


def replica_suffix() -> str:
    return os.environ.get("RUNLOOM_REPLICA_ID") or f"{os.getpid():x}"
