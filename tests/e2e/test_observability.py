"""Observability end to end, against the real platform (real processes, NATS, PostgreSQL).

Traces go over OTLP/HTTP to a receiver this test runs (the real exporter; requests decoded with
opentelemetry-proto): a run is one trace from the gateway's POST to its terminal event, across
every NATS hop and all four services; a clarification pause and resume stays in it; a run taken
over after its orchestrator is SIGKILLed continues the same trace, linked to the dead attempt.
Every process's management port answers /healthz and /readyz, and its /metrics parses with
prometheus_client's parser, passes `promtool check metrics` and moves as the runs go by.

One platform serves every check (starting it is most of the cost).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from asyncio.subprocess import PIPE, STDOUT
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from prometheus_client.parser import text_string_to_metric_families
from runloom.devkit.runs import json_events, sse_events, wait_for_event

PRODUCER, CONSUMER, SERVER = (
    PbSpan.SpanKind.SPAN_KIND_PRODUCER,
    PbSpan.SpanKind.SPAN_KIND_CONSUMER,
    PbSpan.SpanKind.SPAN_KIND_SERVER,
)
SERVICES = {"runloom-gateway", "runloom-orchestrator", "runloom-deliverables", "runloom-billing"}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int
    service: str
    instance: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    start_ns: int


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@dataclass
class Receiver:
    """An OTLP/HTTP (protobuf) traces endpoint: POST /v1/traces."""

    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        got: list[Span] = []
        for rs in req.resource_spans:
            res = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            service=res.get("service.name", ""),
                            instance=res.get("service.instance.id", ""),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                            start_ns=s.start_time_unix_nano,
                        )
                    )
        with self.lock:
            self.spans += got
            self.requests += 1

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def all(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Any:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
                self.send_response(404)
                self.end_headers()
                return
            rec.take(body)
            out = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def _start(platform: Any, receiver: Any, *services: str) -> None:
    platform.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # Every run's trace, not the default one in ten: each run here is checked whole.
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "RUNLOOM_REPORT_DELTA_INTERVAL_S": "0.25",  # slow enough to kill a run mid-report
        }
    )
    for service in services:
        platform.add(service)


def _trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


async def _settled(receiver: Receiver, trace_id: str, want: Any, timeout: float = 20) -> list[Span]:
    """The trace's spans once `want(spans)` holds (export is batched)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.trace(trace_id)
        if want(spans):
            await asyncio.sleep(0.5)  # what was batched with them
            return receiver.trace(trace_id)
        assert time.monotonic() < deadline, sorted({(s.service, s.name) for s in spans})
        await asyncio.sleep(0.2)


def _assert_one_connected_trace(events: list[dict], spans: list[Span]) -> Span:
    """One trace from the POST to the terminal event, every span's parent in it, every NATS hop a
    PRODUCER -> CONSUMER edge; returns the root (the gateway's POST /v1/runs server span)."""
    trace_ids = {_trace_id(e["trace"]) for e in events}
    assert len(trace_ids) == 1, trace_ids
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent]
    assert len(roots) == 1, [(r.service, r.name) for r in roots]
    root = roots[0]
    assert (root.service, root.kind, root.name) == ("runloom-gateway", SERVER, "POST /v1/runs")
    orphans = [(s.service, s.name) for s in spans if s.parent and s.parent not in by_id]
    assert not orphans, orphans
    assert {s.service for s in spans} == SERVICES
    # Each event of the run was published in a producer span of this trace, with semconv names.
    appends = {
        s.attributes["messaging.message.id"]: s
        for s in spans
        if s.kind == PRODUCER and s.name == "publish run.{id}.events"
    }
    for e in events:
        span = appends.get(e["id"])
        assert span is not None, e["type"]
        assert span.attributes["messaging.system"] == "nats"
        assert span.attributes["messaging.message.conversation_id"] == e["run_id"]
        assert span.attributes["messaging.destination.name"] == f"run.{e['run_id']}.events"
    # Every hop across NATS: a CONSUMER span whose parent is the PRODUCER span of the message.
    hops = set()
    for s in spans:
        if s.kind != CONSUMER:
            continue
        parent = by_id[s.parent]
        assert parent.kind == PRODUCER, (s.name, parent.name)
        assert parent.name.replace("publish ", "process ", 1) == s.name
        hops.add((parent.service, s.service, s.name))
    for hop in (
        ("runloom-gateway", "runloom-orchestrator", "process cmd.run.start"),
        ("runloom-orchestrator", "runloom-orchestrator", "process cmd.drive.run"),
        ("runloom-orchestrator", "runloom-billing", "process billing.reserve"),
        ("runloom-orchestrator", "runloom-billing", "process billing.commit"),
        ("runloom-orchestrator", "runloom-deliverables", "process job.deliverable.report"),
        ("runloom-orchestrator", "runloom-billing", "process run.{id}.events"),
    ):
        assert hop in hops, (hop, sorted(hops))
    names = {(s.service, s.name) for s in spans}
    for expected in (
        ("runloom-orchestrator", "run research_report"),
        ("runloom-orchestrator", "research sub-agent"),
        ("runloom-orchestrator", "chat extractive-1"),
    ):
        assert expected in names, expected
    # PostgreSQL queries, by the asyncpg instrumentation.
    assert any(
        "postgresql" in (s.attributes.get("db.system"), s.attributes.get("db.system.name"))
        for s in spans
    ), sorted(names)
    return root


# -- metrics --------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make promtool` installs Debian's prometheus package")
    return path


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in got.items() if n == name and want <= set(ls))


async def scrape(client: httpx.AsyncClient, base: str) -> tuple[str, Samples]:
    r = await client.get(f"{base}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text, samples(r.text)


async def wait_ready(client: httpx.AsyncClient, base: str, timeout: float = 30) -> dict[str, Any]:
    """Poll /readyz until 200 (a process still starting has no port yet, or answers 503)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            r = await client.get(f"{base}/readyz")
            if r.status_code == 200:
                return r.json()  # type: ignore[no-any-return]
            last = f"{r.status_code} {r.text}"
        except httpx.TransportError as exc:
            last = repr(exc)
        assert time.monotonic() < deadline, f"{base}/readyz: {last}"
        await asyncio.sleep(0.2)


async def _scrape_all(platform: Any) -> dict[str, tuple[str, Samples]]:
    """Every running process's /metrics (text and samples), by process name."""
    alive = {n: b for n, b in platform.management.items() if platform[n].proc.poll() is None}
    async with httpx.AsyncClient(timeout=10) as m:
        return {name: await scrape(m, base) for name, base in alive.items()}


async def _paused_and_resumed(platform: Any, receiver: Receiver) -> None:
    """A run that asks for clarification, is answered and completes: one connected trace."""
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{platform.url}/v1/runs",
            json={"question": "Can you help me?", "options": {"deliverables": ["report"]}},
            headers=h,
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        await wait_for_event(client, platform.url, run_id, h, {"clarification.requested"})
        r = await client.post(
            f"{platform.url}/v1/runs/{run_id}/clarification",
            json={"answer": "exceptions and the try statement"},
            headers=h,
        )
        assert r.status_code == 202, r.text
        # Followed live: the gateway's fan-out hands each event to this client.
        events, _ = await sse_events(client, platform.url, run_id, h)
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed", types
    trace_id = _trace_id(events[0]["trace"])
    last = events[-1]["id"]
    spans = await _settled(
        receiver,
        trace_id,
        lambda ss: (
            any(s.attributes.get("messaging.message.id") == last for s in ss)
            and any(s.name == "POST /v1/runs" for s in ss)
            and any(s.name == "process job.deliverable.report" for s in ss)
        ),
    )
    _assert_one_connected_trace(events, spans)
    runs = [s for s in spans if s.name == "run research_report"]
    assert len(runs) == 2, len(runs)  # the pause, then the resume
    answer = next(s for s in spans if s.name == "answer clarification")
    request = next(s for s in receiver.all() if s.name == "POST /v1/runs/{run_id}/clarification")
    assert request.trace_id != trace_id  # the answer request is its own trace, linked
    assert (request.trace_id, request.span_id) in answer.links
    resumed = next(s for s in spans if s.name == "process cmd.run.resume")
    assert any(s.span_id == resumed.parent and s.name == "publish cmd.run.resume" for s in spans)


async def _taken_over(platform: Any, receiver: Receiver) -> None:
    """A run whose orchestrator is SIGKILLed: the other replica continues the same trace."""
    h = platform.headers()
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{platform.url}/v1/runs",
            json={
                "question": "How do Python decorators and context managers work?",
                "options": {"deliverables": []},
            },
            headers=h,
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        seen = await wait_for_event(client, platform.url, run_id, h, {"message.delta"})
        owner = next(e for e in seen if e["type"] == "run.started")["data"]["worker"]
        platform[owner.split("/", 1)[1]].kill()
        events, _ = await sse_events(client, platform.url, run_id, h, timeout=60)
        history = await json_events(client, platform.url, run_id, h)
    types = [e["type"] for e in events]
    assert types[-1] == "run.completed", types
    assert len(history) == len(events)
    started = [e for e in events if e["type"] == "run.started"]
    assert len(started) == 2
    trace_id = _trace_id(events[0]["trace"])
    assert {_trace_id(e["trace"]) for e in events} == {trace_id}  # POST to terminal event
    last = events[-1]["id"]
    spans = await _settled(
        receiver,
        trace_id,
        lambda ss: any(s.attributes.get("messaging.message.id") == last for s in ss),
    )
    survivor = started[1]["data"]["worker"].split("/", 1)[1]
    # The survivor's run span is in the run's trace, under the run's creation...
    run_span = next(s for s in spans if s.name == "run research_report" and s.instance == survivor)
    by_id = {s.span_id: s for s in spans}
    assert by_id[run_span.parent].name == "publish run.{id}.events"
    # ...and linked to the attempt that died (the context its run.started was written in).
    dead = started[0]["trace"].split("-")
    assert (dead[1], dead[2]) in run_span.links
    # The redelivered drive command (the dispatcher handed the run out once) is not a child
    # of its creation: a link to it.
    redelivered = next(
        s
        for s in receiver.all()
        if s.name == "process cmd.drive.run"
        and s.instance == survivor
        and s.attributes.get("messaging.message.id") == f"drive-start-{run_id}-1"
    )
    assert redelivered.attributes["messaging.nats.message.delivery_count"] >= 2
    assert redelivered.trace_id != trace_id and not redelivered.parent
    publish = next(s for s in spans if s.name == "publish cmd.drive.run")
    assert (publish.trace_id, publish.span_id) in redelivered.links
    assert (redelivered.trace_id, redelivered.span_id) in run_span.links
    # What the survivor did after taking over hangs together under its run span.
    after = [s for s in spans if s.instance == survivor and s.start_ns >= run_span.start_ns]
    assert len(after) > 10
    assert not [s.name for s in after if s.parent and s.parent not in by_id]


def _moved(
    before: dict[str, tuple[str, Samples]],
    after: dict[str, tuple[str, Samples]],
    service: str,
    metric: str,
    by: float = 1,
    **labels: str,
) -> None:
    """`metric` (summed over the service's replicas) grew by at least `by`."""
    names = [n for n in after if n.startswith(f"{service}-")]
    delta = sum(
        value(after[n][1], metric, **labels) - value(before.get(n, ("", {}))[1], metric, **labels)
        for n in names
    )
    assert delta >= by, f"{service}: {metric}{labels} moved by {delta}, expected >= {by}"


@pytest.mark.platform_services()
async def test_traces_and_metrics_of_real_runs(receiver, platform, corpus) -> None:
    _start(platform, receiver, "gateway", "billing", "deliverables", "orchestrator", "orchestrator")
    async with httpx.AsyncClient(timeout=10) as m:
        for name, base in platform.management.items():
            ready = await wait_ready(m, base)
            checks = ready["checks"]
            assert checks["nats"] == checks["postgres"] == "ok", (name, ready)
            # Each consumer and responder of the process says it takes its work (liveness).
            assert set(checks.values()) == {"ok"}, (name, ready)
            assert any(check.startswith("consumer ") for check in checks), (name, ready)
            assert (await m.get(f"{base}/healthz")).json() == {"status": "ok"}
            assert (await m.get(f"{base}/nothing")).status_code == 404
    before = await _scrape_all(platform)

    await _paused_and_resumed(platform, receiver)

    after = await _scrape_all(platform)
    for name, (text, _) in after.items():
        check = await asyncio.create_subprocess_exec(
            promtool(), "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await asyncio.wait_for(check.communicate(text.encode()), 30)
        assert check.returncode == 0, (name, out.decode())
    moved = lambda *a, **kw: _moved(before, after, *a, **kw)  # noqa: E731
    moved("gateway", "runloom_events_appended_total", type="run.created")
    moved("gateway", "runloom_events_appended_total", type="clarification.answered")
    moved("gateway", "runloom_messages_published_total", destination="cmd.run.start")
    moved("gateway", "runloom_http_requests_total", method="POST", route="/v1/runs", status="201")
    stream = {"method": "GET", "route": "/v1/runs/{run_id}/events"}
    moved("gateway", "runloom_http_requests_total", status="200", **stream)  # plain SSE streams
    moved("gateway", "runloom_http_request_duration_seconds_count", **stream)
    moved("gateway", "runloom_sse_events_fanned_out_total", by=5)
    moved("gateway", "runloom_sse_event_latency_seconds_count", by=5)
    moved("gateway", "runloom_event_append_duration_seconds_count", by=2)
    moved("orchestrator", "runloom_events_appended_total", type="clarification.requested")
    moved("orchestrator", "runloom_events_appended_total", by=3, type="message.delta")
    moved("orchestrator", "runloom_messages_processed_total", by=2, outcome="ok")
    moved("orchestrator", "runloom_provider_calls_total", provider="offline")
    moved("orchestrator", "runloom_provider_tokens_total", direction="output")
    moved("orchestrator", "runloom_tool_calls_total")
    moved("orchestrator", "runloom_runs_driven_total", outcome="paused")
    moved("orchestrator", "runloom_runs_driven_total", outcome="completed")
    moved("deliverables", "runloom_job_attempts_total", kind="report")
    moved("deliverables", "runloom_jobs_ready_total", kind="report")
    moved("billing", "runloom_budget_reservations_total", outcome="granted")
    moved("billing", "runloom_billing_requests_total", operation="commit", result="ok")
    moved("billing", "runloom_messages_processed_total", by=10, durable="billing-ledger")
    assert value(after["gateway-1"][1], "runloom_archive_lag_events") >= 0
    for name, durable in (
        ("orchestrator-1", "orchestrator"),
        ("deliverables-1", "deliverables"),
        ("gateway-1", "run-archive"),
        ("billing-1", "billing-ledger"),
    ):
        got = {(n, dict(ls).get("durable")) for n, ls in after[name][1]}
        assert ("runloom_consumer_pending_messages", durable) in got, (name, durable)

    await _taken_over(platform, receiver)
    final = await _scrape_all(platform)
    _moved(after, final, "orchestrator", "runloom_message_redeliveries_total")
