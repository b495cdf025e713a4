"""OpenTelemetry: one trace per run, carried in NATS headers across every hop, exported over OTLP.

`setup_tracing` installs the process's tracer provider from the standard `OTEL_*` variables.
Export is on when `RUNLOOM_OTEL_EXPORTER=otlp`, or when it is unset and an
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set: spans then go over
OTLP/HTTP protobuf through a batch processor (a thread of its own, `OTEL_BSP_*`), sampled as
`OTEL_TRACES_SAMPLER` says, and the maintained instrumentations of asyncpg (and FastAPI, in the
gateway) are switched on. Without `OTEL_TRACES_SAMPLER` the sampler is `parentbased_traceidratio`
at `OTEL_TRACES_SAMPLER_ARG` (default `DEFAULT_RATIO`): whether a trace is kept is decided once,
at its root (a run's: the gateway's `POST /v1/runs`), from the trace id, and every span under it
follows, in every process: a run's trace is kept whole or not at all. A request that arrives
with a sampled `traceparent` is always kept. Without
it nothing is recorded: trace ids are still made and propagated (events, logs and headers carry
them) but every span is a non-recording one, and no instrumentation is installed.

Messaging spans follow the OpenTelemetry messaging semantic conventions, with
`messaging.system=nats`:

- `producer_span(...)`: a PRODUCER span `publish {destination template}` around one publish;
  its context is injected into the message's headers (the message's creation context).
- `consumer_span(...)`: a CONSUMER span `process {destination template}` around handling one
  message: a child of the creation context on the first delivery; on a redelivery (or a
  replay) a *link* to it instead, in the trace the caller chooses (`parent`) or a new one.

Destination templates keep span names low-cardinality: `run.{id}.events`, never a run id.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

SYSTEM = "nats"
_TRACEPARENT = "traceparent"
DEFAULT_RATIO = 0.1
"""Share of traces (runs) kept when export is on and `OTEL_TRACES_SAMPLER` is unset."""
_configured = False
_exporting = False


# -- setup --------------------------------------------------------------------------------------


def export_mode(exporter: str = "", environ: Mapping[str, str] | None = None) -> str:
    """What `setup_tracing` does: none | console | otlp (empty `exporter`: otlp if an endpoint
    is set, none otherwise)."""
    env = os.environ if environ is None else environ
    mode = (exporter or "").strip().lower()
    if not mode:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        mode = "otlp" if endpoint else "none"
    if mode not in ("none", "console", "otlp"):
        raise ValueError(f"RUNLOOM_OTEL_EXPORTER={exporter!r}: use none, console or otlp")
    return mode


def setup_tracing(service: str, exporter: str = "") -> bool:
    """Install the tracer provider once per process; True when spans are exported."""
    global _configured, _exporting
    if _configured:
        return _exporting
    mode = export_mode(exporter)
    attributes = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"runloom-{service}",
        "service.namespace": "runloom",
        "service.instance.id": replica_suffix(),
    }
    resource = Resource.create(attributes)
    if mode == "none":
        # Ids are still made and propagated, but no span is recorded: nothing is slowed.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        provider = TracerProvider(resource=resource, sampler=default_sampler())
        if mode == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _instrument_asyncpg()
    trace.set_tracer_provider(provider)
    _configured = True
    _exporting = mode != "none"
    return _exporting


def default_sampler(environ: Mapping[str, str] | None = None) -> Sampler | None:
    """Runloom's sampler when `OTEL_TRACES_SAMPLER` is unset: parent-based, roots kept by
    trace-id ratio (`OTEL_TRACES_SAMPLER_ARG`, else `DEFAULT_RATIO`); None when it is set
    (the SDK reads it)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_TRACES_SAMPLER"):
        return None
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(arg) if arg else DEFAULT_RATIO
    except ValueError:
        raise ValueError(
            f"OTEL_TRACES_SAMPLER_ARG={arg!r}: give the share of traces to keep, 0 to 1"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: give the share to keep, 0 to 1")
    return ParentBased(TraceIdRatioBased(ratio))


def exporting() -> bool:
    """Spans are recorded and exported in this process."""
    return _exporting


def _instrument_asyncpg() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument()


@functools.cache
def tracer(name: str) -> trace.Tracer:
    """The named tracer, made once: it follows the provider installed later (a proxy until then),
    and asking the API for it again on every span costs an environment lookup when none is."""
    return trace.get_tracer(name)


# -- propagation ---------------------------------------------------------------------------------


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


def sampled(headers: Mapping[str, Any] | None) -> bool:
    """The message's W3C traceparent says its trace is kept (flags' sampled bit), read
    without parsing the whole context."""
    traceparent = (headers or {}).get(_TRACEPARENT)
    if not isinstance(traceparent, str) or len(traceparent) < 2:
        return False
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except ValueError:
        return False


def span_context_of(traceparent: str | None) -> trace.SpanContext | None:
    """The span context a traceparent names, if it is a valid one."""
    ctx = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    return ctx if ctx.is_valid else None


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, hex, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def replica_suffix() -> str:
    return os.environ.get("RUNLOOM_REPLICA_ID") or f"{os.getpid():x}"


# -- messaging spans (semantic conventions) -------------------------------------------------------


def destination_template(subject: str) -> str:
    """The low-cardinality form of a subject: `run.<id>.events` -> `run.{id}.events`."""
    parts = subject.split(".")
    if len(parts) == 3 and parts[0] == "run" and parts[2] == "events":
        return "run.{id}.events"
    return subject


def _messaging_attributes(
    operation: str,
    destination: str,
    *,
    message_id: str | None,
    conversation_id: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    template = destination_template(destination)
    attrs: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
    }
    if template != destination:
        attrs["messaging.destination.template"] = template
    if message_id:
        attrs["messaging.message.id"] = message_id
    if conversation_id is None and template != destination:
        conversation_id = destination.split(".")[1]  # run.<run_id>.events
    if conversation_id:
        attrs["messaging.message.conversation_id"] = conversation_id
    if extra:
        attrs.update({k: v for k, v in extra.items() if v is not None})
    return attrs


@contextlib.contextmanager
def producer_span(
    destination: str,
    headers: dict[str, str],
    *,
    message_id: str | None = None,
    conversation_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A PRODUCER span `publish {template}` around one publish; injects its context into `headers`.

    `message_id`: the event or command id (`messaging.message.id`); `conversation_id`: the run id
    (`messaging.message.conversation_id`). Errors raised in the block mark the span failed.
    """
    if not _exporting:
        # Nothing is recorded: the span gives the headers its ids (a child of the current
        # context, as below), without the attributes a recording span would keep and without
        # becoming current (nothing under it would be recorded either): 16 us instead of 24
        # on every append.
        span = tracer("runloom.messaging").start_span("publish", kind=SpanKind.PRODUCER)
        inject(headers, context=trace.set_span_in_context(span))
        yield span
        return
    with tracer("runloom.messaging").start_as_current_span(
        f"publish {destination_template(destination)}", kind=SpanKind.PRODUCER
    ) as span:
        # Attributes only on a span that is kept (the sampler decides on the trace alone).
        if span.is_recording():
            span.set_attributes(
                _messaging_attributes(
                    "publish",
                    destination,
                    message_id=message_id,
                    conversation_id=conversation_id,
                    extra=attributes,
                )
            )
        inject(headers)
        yield span


@contextlib.contextmanager
def consumer_span(
    destination: str,
    headers: Mapping[str, Any] | None,
    *,
    consumer: str | None = None,
    delivered: int = 1,
    message_id: str | None = None,
    conversation_id: str | None = None,
    parent: otel_context.Context | None = None,
    links: Sequence[trace.SpanContext | None] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A CONSUMER span `process {template}` around handling one message; current in the block.

    First delivery (`delivered == 1`, no `parent`): a child of the creation context the message
    carried in `headers`. Redelivery (`delivered > 1`), or a replay (pass `parent`): the creation
    context becomes a link, and the span lives in `parent`'s trace (a new trace when None), so a
    retry long after is not counted as part of the original request. `links` adds more (e.g.
    the attempt that died). `consumer`: the durable (`messaging.consumer.group.name`).
    """
    created = trace.get_current_span(context_from_headers(headers)).get_span_context()
    span_links: list[Link] = []
    redelivered = delivered > 1 or parent is not None
    if redelivered:
        if created.is_valid:
            span_links.append(Link(created, {"messaging.operation.type": "publish"}))
        ctx = parent if parent is not None else otel_context.Context()
    else:
        ctx = context_from_headers(headers)
    span_links += [Link(c) for c in links if c is not None and c.is_valid]
    with tracer("runloom.messaging").start_as_current_span(
        f"process {destination_template(destination)}",
        context=ctx,
        kind=SpanKind.CONSUMER,
        links=span_links,
    ) as span:
        if span.is_recording():  # attributes only on a span that is kept
            extra: dict[str, Any] = {"messaging.consumer.group.name": consumer}
            if delivered > 1:
                extra["messaging.nats.message.delivery_count"] = delivered
            extra.update(attributes or {})
            span.set_attributes(
                _messaging_attributes(
                    "process",
                    destination,
                    message_id=message_id,
                    conversation_id=conversation_id,
                    extra=extra,
                )
            )
        yield span


@contextlib.contextmanager
def work_span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    links: Sequence[trace.SpanContext | None] = (),
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """An INTERNAL span (a run, a sub-agent, a job) under `parent` or the current context."""
    with tracer("runloom").start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        links=[Link(c) for c in links if c is not None and c.is_valid],
    ) as span:
        yield span


def mark_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
