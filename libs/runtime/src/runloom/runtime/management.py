"""The management port of every service process: GET /metrics, /healthz and /readyz.

A small HTTP/1.1 server on the process's event loop (no web framework: the worker services
have none), on `RUNLOOM_MANAGEMENT_HOST:RUNLOOM_MANAGEMENT_PORT`:

- `/metrics`: the process's Prometheus registry (text format; OpenMetrics when asked for).
  Gauges read from the servers (consumer pending, archive lag) are refreshed by the service's
  scrape hooks first, each bounded in time, so a scrape never hangs on a server that is away.
- `/healthz`: the process is alive and its event loop answers.
- `/debug/heap` (only with `RUNLOOM_TRACEMALLOC=<frames>`, which starts tracemalloc when the
  process starts): the 25 call sites whose allocations grew most since the previous call (the
  first call: since start), for finding what grows under a long load (`make soak`).
- `/readyz`: the service said it is started (consumers running) and every check passes now
  (NATS connected and answering, PostgreSQL answering), and no consumer or responder of the
  process is stalled (`Liveness`); 503 with the failing check otherwise.

Liveness: every consumer (`runtime.consumer`) and responder (`runtime.responder`) registers a
`Liveness` while it serves. Its own watchdog marks it failing when it has stopped taking work
that waits for it (its subscription killed, its delivery task dead, its consumer deleted on the
server, its requests unanswered or refused by permission), re-creates it, and marks it alive
again once it works; /readyz names it while it fails (a refusal with the subject refused and
the NATS identity to check), and `runloom_subscription_recreations_total` /
`runloom_subscription_failing` say so to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when ready, raises (any exception) when not."""
ScrapeHook = Callable[[], Awaitable[None]]
"""Refreshes gauges read from elsewhere (a consumer's pending count) before a scrape."""

CHECK_TIMEOUT_S = 1.0
HOOK_TIMEOUT_S = 2.0
_MAX_REQUEST = 8192


RECREATIONS = Counter(
    "runloom_subscription_recreations",
    "Consumers and responders re-created by their watchdog after they stopped taking waiting "
    "work, by kind (consumer, responder), name and reason",
    ["kind", "name", "reason"],
)


class Liveness:
    """Whether one consumer or responder of this process takes the work that waits for it.

    `fail(reason)` when its watchdog finds it stalled (counted, with the reason), `ok()` once
    it is re-created; registered in `LIVENESS` from `register()` to `unregister()`.
    """

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.failing: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def fail(self, reason: str, detail: str) -> None:
        """Stalled for `reason` (a short word, the metric's label); `detail` says what was seen."""
        if self.failing is None:
            RECREATIONS.labels(self.kind, self.name, reason).inc()
            log.warning("%s stalled (%s): %s; re-creating it", self.label, reason, detail)
        self.failing = f"{reason}: {detail}"

    def ok(self) -> None:
        if self.failing is not None:
            log.warning("%s re-created and taking work again", self.label)
        self.failing = None

    def register(self) -> Liveness:
        LIVENESS.add(self)
        return self

    def unregister(self) -> None:
        LIVENESS.discard(self)


LIVENESS: set[Liveness] = set()
"""The consumers and responders serving in this process now."""


def liveness_results() -> dict[str, str]:
    """`<kind> <name>` -> "ok" or why it fails (the worst of several of the same name)."""
    out: dict[str, str] = {}
    for live in sorted(LIVENESS, key=lambda lv: lv.failing is None):
        out.setdefault(live.label, "ok" if live.failing is None else f"stalled: {live.failing}")
    return out


class _LivenessCollector(Collector):
    def collect(self) -> Any:
        failing = GaugeMetricFamily(
            "runloom_subscription_failing",
            "1 while a consumer or responder is stalled and not yet re-created, by kind and name",
            labels=["kind", "name"],
        )
        seen: dict[tuple[str, str], int] = {}
        for live in list(LIVENESS):
            key = (live.kind, live.name)
            seen[key] = max(seen.get(key, 0), int(live.failing is not None))
        for (kind, name), value in sorted(seen.items()):
            failing.add_metric([kind, name], value)
        yield failing


REGISTRY.register(_LivenessCollector())


class _TasksCollector(Collector):
    """`runloom_asyncio_tasks`: the tasks of the event loop the scrape runs on (the service's:
    its management port serves on it), so a soak sees tasks that pile up."""

    def collect(self) -> Any:
        tasks = GaugeMetricFamily(
            "runloom_asyncio_tasks", "Asyncio tasks alive in the process's event loop"
        )
        with contextlib.suppress(RuntimeError):  # no running loop in this thread: no sample
            tasks.add_metric([], len(asyncio.all_tasks()))
        yield tasks


REGISTRY.register(_TasksCollector())


def nats_check(nc: Any) -> Check:
    """Ready when the NATS connection is up and a round trip (flush) answers."""

    async def check() -> None:
        if not nc.is_connected:
            raise ConnectionError("not connected")
        await nc.flush(timeout=CHECK_TIMEOUT_S)

    return check


def postgres_check(pool: Any) -> Check:
    """Ready when the pool answers `SELECT 1`."""

    async def check() -> None:
        await pool.fetchval("SELECT 1")

    return check


async def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """Every check, concurrently, each bounded by CHECK_TIMEOUT_S: (all ok, name -> result)."""

    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
            return "ok"
        except Exception as exc:
            return f"unavailable: {exc or type(exc).__name__}"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    out = dict(zip(names, results, strict=True))
    return all(v == "ok" for v in out.values()), out


class HeapDiff:
    """tracemalloc snapshots compared call to call (see `/debug/heap`)."""

    def __init__(self) -> None:
        self.previous: tracemalloc.Snapshot | None = None

    def report(self, top: int = 25) -> str:
        if not tracemalloc.is_tracing():
            return "tracemalloc is off: start the process with RUNLOOM_TRACEMALLOC=<frames>\n"
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"traced {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB)"]
        if self.previous is None:
            stats = snapshot.statistics("traceback")[:top]
            lines += [f"{s.size / 1024:9.1f} KiB {s.count:7d} blocks  " + _where(s) for s in stats]
        else:
            diff = snapshot.compare_to(self.previous, "traceback")[:top]
            lines += [
                f"{d.size_diff / 1024:+9.1f} KiB {d.count_diff:+7d} blocks "
                f"(now {d.size / 1024:.1f} KiB)  " + _where(d)
                for d in diff
            ]
        self.previous = snapshot
        return "\n".join(lines) + "\n"


def _where(stat: Any) -> str:
    """The allocating line first, then its callers."""
    frames = reversed(list(stat.traceback))  # tracemalloc lists the oldest frame first
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)


def start_tracing() -> None:
    """tracemalloc from now on when RUNLOOM_TRACEMALLOC names a frame count (costly: for hunts)."""
    frames = os.environ.get("RUNLOOM_TRACEMALLOC", "")
    if frames.isdigit() and int(frames) > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(int(frames))


class ManagementServer:
    """One process's management endpoints; `start()` binds, `close()` stops serving."""

    def __init__(self, host: str, port: int, *, registry: CollectorRegistry = REGISTRY) -> None:
        self.host = host
        self.requested_port = port
        self.registry = registry
        self.checks: dict[str, Check] = {}
        self.hooks: list[ScrapeHook] = []
        self.started = False
        """Set by the service once its consumers run; /readyz is 503 before."""
        self._server: asyncio.Server | None = None
        self.heap = HeapDiff()
        start_tracing()

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def add_scrape_hook(self, hook: ScrapeHook) -> None:
        self.hooks.append(hook)

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.requested_port, reuse_address=True
            )
        except OSError as exc:
            raise OSError(
                f"the management port {self.host}:{self.requested_port} cannot be bound ({exc}); "
                "set RUNLOOM_MANAGEMENT_PORT (and RUNLOOM_MANAGEMENT_HOST) to a free one"
            ) from exc
        log.info(
            "management port on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None

    # -- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > _MAX_REQUEST:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                await self._reply(writer, 400, b"bad request\n")
                return
            method, target, _ = parts
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await self._reply(writer, 405, b"method not allowed\n", extra={"Allow": "GET"})
                return
            status, body, ctype = await self._route(path, headers.get("accept", ""))
            await self._reply(writer, status, b"" if method == "HEAD" else body, ctype=ctype)
        except Exception:
            log.exception("management request failed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _route(self, path: str, accept: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            await self._run_hooks()
            encoder, ctype = choose_encoder(accept)
            return 200, encoder(self.registry), ctype
        if path == "/healthz":
            return 200, b'{"status":"ok"}\n', "application/json"
        if path == "/debug/heap":
            report = await asyncio.to_thread(self.heap.report)
            return 200, report.encode(), "text/plain"
        if path == "/readyz":
            ok, results = await run_checks(self.checks)
            live = liveness_results()
            results.update(live)
            ok = ok and all(v == "ok" for v in live.values())
            if not self.started:
                ok, results = False, {"service": "starting", **results}
            body = json.dumps({"status": "ready" if ok else "not ready", "checks": results})
            return (200 if ok else 503), body.encode() + b"\n", "application/json"
        return 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"

    async def _run_hooks(self) -> None:
        async def one(hook: ScrapeHook) -> None:
            try:
                await asyncio.wait_for(hook(), timeout=HOOK_TIMEOUT_S)
            except Exception as exc:
                log.debug("scrape hook failed: %s", exc)

        await asyncio.gather(*(one(h) for h in self.hooks))

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        ctype: str = "text/plain",
        extra: dict[str, str] | None = None,
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            503: "Service Unavailable",
        }.get(status, "")
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
