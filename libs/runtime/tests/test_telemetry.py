"""The default trace sampling: a run's trace is kept whole (in every process) or not at all,
about one run in ten, and a caller's sampled traceparent is always honoured."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runloom.runtime.telemetry import DEFAULT_RATIO, default_sampler, sampled


def _process(environ: dict[str, str]) -> tuple[trace.Tracer, InMemorySpanExporter]:
    """One process's tracer, sampling as `setup_tracing` would with `environ`."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=default_sampler(environ))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider.get_tracer("test"), exported


def test_a_run_is_kept_whole_or_not_at_all_about_one_in_ten() -> None:
    gateway, from_gateway = _process({})
    orchestrator, from_orchestrator = _process({})
    runs = 2000
    for _ in range(runs):
        # The gateway's root span; its context crosses to another process in headers.
        with gateway.start_as_current_span("POST /v1/runs"):
            headers: dict[str, str] = {}
            inject(headers)
        with orchestrator.start_as_current_span("run", context=extract(headers)):
            with orchestrator.start_as_current_span("publish run.{id}.events"):
                pass
    roots = {s.context.trace_id for s in from_gateway.get_finished_spans()}
    spans = from_orchestrator.get_finished_spans()
    assert {s.context.trace_id for s in spans} == roots  # the same runs kept on both sides
    assert len(spans) == 2 * len(roots)  # and every span of each
    assert 0.5 * DEFAULT_RATIO < len(roots) / runs < 1.5 * DEFAULT_RATIO


def test_a_sampled_caller_is_always_kept_and_the_ratio_can_be_set() -> None:
    tracer, exported = _process({})
    caller = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    for _ in range(20):
        with tracer.start_as_current_span("POST /v1/runs", context=extract(caller)):
            pass
    assert len(exported.get_finished_spans()) == 20

    everything, all_kept = _process({"OTEL_TRACES_SAMPLER_ARG": "1"})
    nothing, none_kept = _process({"OTEL_TRACES_SAMPLER_ARG": "0"})
    for _ in range(50):
        with everything.start_as_current_span("a"):
            pass
        with nothing.start_as_current_span("b"):
            pass
    assert len(all_kept.get_finished_spans()) == 50
    assert not none_kept.get_finished_spans()
    # The standard variable wins: the SDK reads it.
    assert default_sampler({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}) is None


@pytest.mark.parametrize("arg", ["ten percent", "1.5", "-0.1"])
def test_a_bad_ratio_says_what_to_give(arg: str) -> None:
    with pytest.raises(ValueError, match="0 to 1"):
        default_sampler({"OTEL_TRACES_SAMPLER_ARG": arg})


def test_sampled_reads_the_flag_of_a_traceparent() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"
    assert sampled({"traceparent": tp + "01"})
    assert not sampled({"traceparent": tp + "00"})
    assert not sampled({"traceparent": "junk-zz"})
    assert not sampled({})
    assert not sampled(None)
