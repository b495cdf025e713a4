"""The fault suite's platform and load: a 3-node cluster in network namespaces, a fault proxy in
front of each node, PostgreSQL, two replicas of every service, and a load that records what a
Jepsen-style checker needs (`runloom.devkit.checker`).

Load, for one fault: platform runs posted through both gateways, each followed by SSE clients
that drop and resume (alternating gateways, `Last-Event-ID`), plus synthetic runs where two
concurrent writers append through `EventLog` and record every acknowledged append.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nats.js.errors import NotFoundError
from runloom.devkit import database
from runloom.devkit.checker import TERMINAL, RunHistory, Seen, Verdict, check
from runloom.devkit.cluster import NatsCluster
from runloom.devkit.embedded import PostgresServer, free_port
from runloom.devkit.faultproxy import FaultProxy
from runloom.devkit.netns import NetLab
from runloom.devkit.supervisor import SERVICES, ServiceProcess, wait_http

QUESTION = "How do Python decorators and context managers work?"


@dataclass
class ClientLog:
    """One SSE client across its reconnects."""

    events: list[Seen] = field(default_factory=list)
    arrived: dict[str, float] = field(default_factory=dict)
    """Event id -> wall-clock time it first reached this client."""
    longest_gap_s: float = 0.0
    """Longest time between two events (the run's own pauses included)."""
    reconnects: int = 0
    refusals: dict[int, int] = field(default_factory=dict)
    """HTTP status -> how often the gateway refused to attach (503 is expected during a
    fault; a 5xx other than 503 is a bug a user would see)."""

    resets: int = 0
    """Reset frames received (history the gateway could not serve)."""
    failures: list[str] = field(default_factory=list)
    """Unexpected errors while reading (each followed by a reconnect)."""
    attempts: list[tuple[float, int, int]] = field(default_factory=list)
    """(wall-clock time, gateway index, HTTP status or 0 for a transport error) per attach."""

    def longest_delay_s(self, stored: dict[str, float]) -> float:
        """Longest time from an event being stored (its append acknowledged) to this client
        receiving it: what the fault held back, not the run's own pauses."""
        return max(
            (max(0.0, at - stored[i]) for i, at in self.arrived.items() if i in stored),
            default=0.0,
        )

    def explain_delay(self, stored: dict[str, float]) -> str:
        """The slowest event and what this client did meanwhile (attaches, statuses)."""
        worst = max(
            (i for i in self.arrived if i in stored),
            key=lambda i: self.arrived[i] - stored[i],
            default=None,
        )
        if worst is None:
            return ""
        t0, t1 = stored[worst], self.arrived[worst]
        during = [(round(t - t0, 2), g, st) for t, g, st in self.attempts if t0 - 1 <= t <= t1]
        return f"stored->received {t1 - t0:.2f}s; attaches (s after store, gw, status) {during}"


@dataclass
class Outcome:
    """One fault's row: the checker's verdict and what clients felt."""

    fault: str
    verdict: Verdict
    runs_completed: int
    runs: int
    longest_delay_s: float
    """Longest time from an event's append being acknowledged to an SSE client receiving it."""
    longest_gap_s: float
    """Longest time between two events at a client (includes the runs' own pauses)."""
    longest_append_s: float
    """Longest time a synthetic writer's append took (call to ack)."""
    server_errors: int
    """SSE attaches answered with a 5xx other than 503 (a 503 says: retry)."""
    acked: int
    seconds: float
    endings: dict[str, int] = field(default_factory=dict)
    """How the platform runs ended (terminal event type -> count)."""
    slowest: str = ""
    """The longest ack -> client delay explained (which client did what meanwhile)."""
    archive_wait_s: float = 0.0
    """How long after the load the PostgreSQL archive still lacked stored events."""
    client_failures: list[str] = field(default_factory=list)
    resets: int = 0
    """Reset frames the SSE clients received (the stream and archive hold every event here, so
    any reset is spurious)."""

    def row(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "fault": self.fault,
            "ok": v.ok,
            "acked": self.acked,
            "lost": v.lost,
            "duplicates": v.duplicates,
            "reorders": v.reorders,
            "holes": v.holes,
            "archive_missing": v.archive_missing,
            "bad_terminal": v.bad_terminal,
            "ledger_mismatch": v.ledger_mismatch,
            "runs_completed": f"{self.runs_completed}/{self.runs}",
            "longest_delay_s": round(self.longest_delay_s, 2),
            "longest_gap_s": round(self.longest_gap_s, 2),
            "longest_append_s": round(self.longest_append_s, 2),
            "server_errors": self.server_errors,
            "seconds": round(self.seconds, 1),
            "endings": self.endings,
            "slowest": self.slowest,
            "archive_wait_s": round(self.archive_wait_s, 1),
            "client_failures": self.client_failures[:5],
            "resets": self.resets,
            "problems": v.problems[:10],
        }


class ClusterPlatform:
    """Everything the fault tests start; `close()` stops all of it."""

    def __init__(self, root: Path, *, replicas: dict[str, int] | None = None) -> None:
        self.root = root
        # No lifecycle replica unless asked: the fault tests and the soak erase nothing.
        self.replicas = {s: 2 for s in SERVICES} | {"lifecycle": 0} | (replicas or {})
        self.lab = NetLab(3)
        self.cluster: NatsCluster | None = None
        self.proxies: list[FaultProxy] = []
        self.postgres = PostgresServer(root / "postgres", free_port())
        self.procs: dict[str, ServiceProcess] = {}
        self.gateways: list[str] = []
        self.api_key = ""
        self.tenant = ""
        self.passwords = database.new_passwords()

    @property
    def nats_url(self) -> str:
        return ",".join(p.url for p in self.proxies)

    @property
    def database_url(self) -> str:
        """The superuser's URL, every service's schema on its search_path."""
        return database.admin_url(self.postgres.url)

    async def start(self) -> None:
        self.lab.open()
        self.cluster = NatsCluster(
            self.root / "nats",
            self.lab.hosts,
            [(4222, 6222, 8222)] * 3,
            netns=self.lab.names,
            home=self.root / "home",
            tls=True,
        )
        # The cluster and PostgreSQL start side by side (each waits on its own readiness).
        await asyncio.gather(
            asyncio.to_thread(self.cluster.start), asyncio.to_thread(self.postgres.start)
        )
        for node in self.cluster.nodes:
            self.proxies.append(await FaultProxy(node.host, node.port).start())
        await self._bootstrap()
        env = {
            "RUNLOOM_NATS_URL": self.nats_url,
            "RUNLOOM_DATABASE_URL": self.database_url,
            **database.service_env(self.postgres.url, self.passwords),
            "RUNLOOM_STREAM_REPLICAS": "3",
            "RUNLOOM_NATS_CA": self.cluster.ca,
            "RUNLOOM_HOME": str(self.root / "home"),
            "RUNLOOM_LOG_FORMAT": "json",
            "RUNLOOM_REPORT_DELTA_INTERVAL_S": "0.25",
        }
        for replica in ("1", "2"):
            for service in SERVICES:
                if int(replica) > self.replicas[service]:
                    continue
                own = {
                    **env,
                    "RUNLOOM_MANAGEMENT_PORT": str(free_port()),
                    "RUNLOOM_NATS_CREDENTIALS": str(self.cluster.credential(service)),
                }
                if service == "gateway":
                    port = free_port()
                    own["RUNLOOM_GATEWAY_PORT"] = str(port)
                    self.gateways.append(f"http://127.0.0.1:{port}")
                proc = ServiceProcess(service, own, self.root / "logs", replica=replica)
                proc.start()
                self.procs[proc.name] = proc
        for url, name in zip(self.gateways, ("gateway-1", "gateway-2"), strict=True):
            await asyncio.to_thread(wait_http, f"{url}/readyz", 60.0, self.procs[name])

    async def _bootstrap(self) -> None:
        from runloom.corpus.store import seed_default_corpus
        from runloom.runtime import bus, db
        from runloom.runtime.config import Settings

        await database.provision(self.postgres.url, self.passwords)
        pool = await db.create_pool(self.database_url, max_size=2)
        try:
            self.tenant = "chaos"
            self.api_key = await database.create_heavy_tenant(pool, self.tenant, self.tenant)
            await seed_default_corpus(pool, self.tenant)
        finally:
            await pool.close()
        nc = await self.connect("chaos-provision")
        try:
            settings = Settings(
                nats_url=self.nats_url, database_url=self.database_url, stream_replicas=3
            )
            await bus.provision(nc.jetstream(), settings)
        finally:
            await nc.close()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def connect(self, name: str, identity: str = "admin", **kwargs: Any) -> Any:
        """A NATS client through the proxies, as `identity`, verifying the nodes' TLS."""
        from runloom.runtime import bus

        assert self.cluster is not None
        return await bus.connect(
            self.nats_url,
            name,
            credentials=self.cluster.credential(identity),
            ca=self.cluster.ca,
            **kwargs,
        )

    async def stream_leader(self, stream: str = "RUN_EVENTS") -> int:
        """Index of the node leading `stream`."""

        nc = await self.connect("chaos-leader")
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        assert self.cluster is not None and info.cluster is not None
        return next(i for i, n in enumerate(self.cluster.nodes) if n.name == info.cluster.leader)

    def pg_stop_immediate(self) -> None:
        """`pg_ctl stop -m immediate`: no checkpoint, crash recovery on the next start."""
        pg = self.postgres
        subprocess.run(
            [str(pg.bin / "pg_ctl"), "-D", str(pg.data), "stop", "-m", "immediate"],
            check=True,
            capture_output=True,
            timeout=30,
            user=pg.user,
        )
        if pg.proc is not None:
            pg.proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(2000)}" for n, p in self.procs.items())

    async def close(self) -> None:
        # Every service stops at once (each may take its drain time), then the servers.
        await asyncio.gather(
            *(asyncio.to_thread(proc.stop, 5) for proc in self.procs.values()),
            return_exceptions=True,
        )
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                await proxy.close()
        nodes = self.cluster.nodes if self.cluster is not None else []
        await asyncio.gather(
            *(asyncio.to_thread(_stop_node, n) for n in nodes),
            asyncio.to_thread(self.postgres.remove_data),
            return_exceptions=True,
        )
        self.lab.close()


def _stop_node(node: Any) -> None:
    node.resume()  # a paused node would not see its stop signal
    node.stop()


# -- load -------------------------------------------------------------------------------------


async def follow(
    plat: ClusterPlatform, run_id: str, log: ClientLog, rng: random.Random, deadline: float
) -> None:
    """An SSE client that drops its connection now and then and resumes from its cursor."""
    cursor: str | None = None
    ended = False
    last_arrival = time.monotonic()
    turn = rng.randrange(2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=15.0)) as client:
        while not ended and time.monotonic() < deadline:
            url = plat.gateways[turn % 2]
            turn += 1
            headers = plat.headers()
            if cursor:
                headers["Last-Event-ID"] = cursor
            drop_after = time.monotonic() + rng.uniform(0.5, 3.0)
            began = time.time()
            try:
                async with client.stream(
                    "GET", f"{url}/v1/runs/{run_id}/events", headers=headers
                ) as resp:
                    log.attempts.append((began, (turn - 1) % 2, resp.status_code))
                    if resp.status_code != 200:
                        code = resp.status_code
                        log.refusals[code] = log.refusals.get(code, 0) + 1
                        await asyncio.sleep(_retry_after(resp))
                        continue
                    data: list[str] = []
                    event_id: str | None = None
                    async for line in resp.aiter_lines():
                        if line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line == "" and data:
                            payload = json.loads("\n".join(data))
                            data = []
                            if payload.get("type") == "reset":
                                log.resets += 1  # the gateway said part of the history is gone
                                cursor = event_id or cursor
                            elif "seq" in payload and "type" in payload:
                                now = time.monotonic()
                                log.longest_gap_s = max(log.longest_gap_s, now - last_arrival)
                                last_arrival = now
                                log.arrived.setdefault(payload["id"], time.time())
                                log.events.append(
                                    Seen(payload["seq"], payload["id"], payload["type"])
                                )
                                cursor = event_id or cursor
                                if payload["type"] in TERMINAL:
                                    ended = True
                                    break
                            if time.monotonic() > drop_after:
                                break
            except (httpx.HTTPError, OSError):
                log.attempts.append((began, (turn - 1) % 2, 0))
                await asyncio.sleep(0.2)
            except Exception as exc:  # what a client library may raise mid-stream: retried
                log.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.2)
            log.reconnects += 1


def _retry_after(resp: httpx.Response) -> float:
    """The wait a 503 asks for (capped at 1 s), else a short pause."""
    try:
        return min(float(resp.headers.get("Retry-After", "0.2")), 1.0)
    except ValueError:
        return 0.2


async def post_run(plat: ClusterPlatform, i: int) -> str:
    async with httpx.AsyncClient(timeout=10.0) as client:
        for attempt in range(40):
            try:
                r = await client.post(
                    f"{plat.gateways[(i + attempt) % 2]}/v1/runs",
                    json={"question": QUESTION, "options": {"deliverables": []}},
                    headers={**plat.headers(), "Idempotency-Key": f"chaos-{i}-{time.time_ns()}"},
                )
                if r.status_code == 201:
                    return str(r.json()["id"])
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError("could not start a run through either gateway")


async def synthetic_writer(
    plat: ClusterPlatform,
    run_ids: list[str],
    acked: dict[str, list[Seen]],
    stop: asyncio.Event,
    slowest: list[float],
) -> None:
    """Appends `step.progress` to each synthetic run until `stop`, recording every ack."""
    from runloom.contracts.ids import ulid
    from runloom.runtime.eventlog import AppendConflict, EventLog

    nc = await plat.connect("chaos-writer", "orchestrator")
    log = EventLog(nc.jetstream(), "chaos-writer", publish_timeout=2.0)
    n = 0
    try:
        while not stop.is_set():
            for run_id in run_ids:
                n += 1
                began = time.monotonic()
                try:
                    ev = await log.append(
                        run_id,
                        plat.tenant,
                        type="step.progress",
                        data={"step_id": "s", "message": f"m{n}"},
                    )
                except (AppendConflict, TimeoutError, OSError, Exception):
                    await asyncio.sleep(0.05)
                    continue
                slowest.append(time.monotonic() - began)
                acked[run_id].append(Seen(ev.seq, ev.id, ev.type))
            await asyncio.sleep(0.02)
        # Each synthetic run ends once: the same event id on every attempt (a retry after an
        # uncertain outcome finds it instead of appending it twice).
        for run_id in run_ids:
            end_id = ulid()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    ev = await log.append(
                        run_id,
                        plat.tenant,
                        type="run.completed",
                        data={},
                        event_id=end_id,
                        check_existing=True,
                    )
                except Exception:
                    await asyncio.sleep(0.25)
                    continue
                acked[run_id].append(Seen(ev.seq, ev.id, ev.type))
                break
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _stream_view(
    plat: ClusterPlatform, run_id: str, stored: dict[str, float]
) -> tuple[list[Seen], str]:
    """The run's events as the stream leader holds them, and the last event's reason or error;
    `stored` gets each event's stream timestamp (when its append was acknowledged).

    Read with the leader's message API, not direct gets: any replica answers a direct get, and
    a node just back from a pause answers from its old state for a while."""
    from runloom.contracts import subjects
    from runloom.contracts.events import decode_event

    nc = await plat.connect("chaos-reader")
    events = []
    try:
        js = nc.jetstream()
        subject = subjects.run_events(run_id)
        position = 0
        while True:
            try:
                msg = await js.get_msg(
                    subjects.RUN_EVENTS_STREAM, seq=position + 1, subject=subject, next=True
                )
            except NotFoundError:
                break
            position = msg.seq or position + 1
            event = decode_event(bytes(msg.data or b""))
            events.append(event)
            if msg.time is not None:
                stored[event.id] = msg.time.timestamp()
    finally:
        await nc.close()
    last = events[-1].data if events else {}
    why = str(last.get("error") or last.get("reason") or "")[:160]
    return [Seen(e.seq, e.id, e.type) for e in events], why


async def _archive_view(plat: ClusterPlatform, run_ids: list[str]) -> dict[str, list[Seen]]:
    import asyncpg

    conn = await asyncpg.connect(plat.database_url)
    try:
        rows = await conn.fetch(
            "SELECT run_id, seq, id, type FROM run_events WHERE run_id = ANY($1) ORDER BY seq",
            run_ids,
        )
    finally:
        await conn.close()
    out: dict[str, list[Seen]] = {r: [] for r in run_ids}
    for row in rows:
        out[row["run_id"]].append(Seen(row["seq"], row["id"], row["type"]))
    return out


class _Ledger:
    """What the checker asks per run, over one NATS connection and one HTTP client for all the
    runs (a connection and a TLS context per run made a soak's check of 1,600 runs take
    longer than a fault's whole envelope)."""

    def __init__(self, plat: ClusterPlatform) -> None:
        self.plat = plat
        self.nc: Any = None
        self.http = httpx.AsyncClient(timeout=10.0)

    async def __aenter__(self) -> _Ledger:
        self.nc = await self.plat.connect("chaos-usage", "billing")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.nc.close()

    async def usage_ids(self, run_id: str) -> int:
        """Distinct usage ids among the run's usage.recorded events (what the ledger must count)."""
        from runloom.runtime.eventlog import EventLog

        events = await EventLog(self.nc.jetstream(), "chaos-usage").events(run_id)
        return len({e.data["usage_id"] for e in events if e.type == "usage.recorded"})

    async def calls(self, run_id: str) -> float:
        """The billing ledger's calls for a run, as GET /v1/usage reports them (either gateway)."""
        for attempt in range(40):
            try:
                r = await self.http.get(
                    f"{self.plat.gateways[attempt % 2]}/v1/usage",
                    params={"run_id": run_id},
                    headers=self.plat.headers(),
                )
                if r.status_code == 200:
                    return float(r.json()["totals"]["calls"])
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError(f"no gateway answered GET /v1/usage for {run_id}")


async def run_fault(
    plat: ClusterPlatform,
    name: str,
    fault: Any,
    *,
    runs: int = 3,
    synthetic: int = 2,
    seed: int = 13,
    settle_s: float = 60.0,
) -> Outcome:
    """Load, then `await fault(plat)` while it runs, then collect and check."""
    from runloom.contracts.ids import new_id

    rng = random.Random(seed)
    started = time.monotonic()
    synth_ids = [new_id("run") for _ in range(synthetic)]
    acked: dict[str, list[Seen]] = {r: [] for r in synth_ids}
    stop = asyncio.Event()
    appends: list[float] = []
    writer = asyncio.ensure_future(synthetic_writer(plat, synth_ids, acked, stop, appends))
    run_ids = [await post_run(plat, i) for i in range(runs)]
    deadline = time.monotonic() + settle_s + 60
    clients = {(r, c): ClientLog() for r in run_ids for c in ("a", "b")}
    followers = [
        asyncio.ensure_future(follow(plat, r, log, random.Random(rng.random()), deadline))
        for (r, _c), log in clients.items()
    ]
    await asyncio.sleep(1.0)
    await fault(plat)
    stop.set()
    await writer
    await asyncio.wait(followers, timeout=max(1.0, deadline - time.monotonic()))
    for f in followers:
        f.cancel()
    judged = await judge(plat, run_ids, clients, acked)
    verdict, stored = judged.verdict, judged.stored
    logs = list(clients.values())
    slowest = max(logs, key=lambda c: c.longest_delay_s(stored), default=None)
    crashed = [f for f in followers if f.done() and not f.cancelled() and f.exception()]
    return Outcome(
        fault=name,
        verdict=verdict,
        runs_completed=judged.completed,
        runs=len(run_ids),
        longest_delay_s=max((c.longest_delay_s(stored) for c in logs), default=0.0),
        longest_gap_s=max((c.longest_gap_s for c in logs), default=0.0),
        longest_append_s=max(appends, default=0.0),
        server_errors=sum(
            n for c in logs for code, n in c.refusals.items() if code >= 500 and code != 503
        ),
        acked=sum(len(a) for a in acked.values()),
        seconds=time.monotonic() - started,
        endings=judged.endings,
        archive_wait_s=judged.archive_wait_s,
        client_failures=[f for c in logs for f in c.failures]
        + [repr(f.exception()) for f in crashed],
        slowest=slowest.explain_delay(stored) if slowest is not None else "",
        resets=sum(c.resets for c in logs),
    )


@dataclass
class Judged:
    """The checker's verdict over a load, and how its platform runs ended."""

    verdict: Verdict
    completed: int
    endings: dict[str, int]
    archive_wait_s: float
    stored: dict[str, float]
    """Event id -> when its append was acknowledged (the stream's timestamp)."""


async def judge(
    plat: ClusterPlatform,
    run_ids: list[str],
    clients: dict[tuple[str, str], ClientLog],
    acked: dict[str, list[Seen]],
) -> Judged:
    """Collect every reader's view of the load's runs (the stream, the archive, each SSE client,
    the ledger; `acked`: the synthetic writers' acknowledged appends per run) and check them."""
    async with _Ledger(plat) as ledger:
        return await _judge(plat, run_ids, clients, acked, ledger)


async def _judge(
    plat: ClusterPlatform,
    run_ids: list[str],
    clients: dict[tuple[str, str], ClientLog],
    acked: dict[str, list[Seen]],
    ledger: _Ledger,
) -> Judged:
    await wait_usage_settled(plat, run_ids, timeout=20, ledger=ledger)
    histories: list[RunHistory] = []
    streams: dict[str, list[Seen]] = {}
    reasons: dict[str, str] = {}
    stored: dict[str, float] = {}
    for r in [*run_ids, *acked]:
        streams[r], reasons[r] = await _stream_view(plat, r, stored)
    # The archive's 60 s start once the streams are read (reading 1,700 runs' streams took
    # longer than that, and the archive was then never read at all), and it is read at least once.
    archive_began = time.monotonic()
    archive_deadline = archive_began + 60
    while True:
        archive = await _archive_view(plat, run_ids)
        if all(len(archive[r]) >= len(streams[r]) for r in run_ids):
            break
        if time.monotonic() >= archive_deadline:
            break
        await asyncio.sleep(0.5)
    archive_wait_s = time.monotonic() - archive_began
    completed = 0
    endings: dict[str, int] = {}
    for r in run_ids:
        stream = streams[r]
        completed += bool(stream) and stream[-1].type == "run.completed"
        end = stream[-1].type if stream and stream[-1].type in TERMINAL else "none"
        if end == "run.failed":
            end += f" ({reasons.get(r, '?')})"
        endings[end] = endings.get(end, 0) + 1
        usage_ids = await ledger.usage_ids(r)
        ledger_calls = await ledger.calls(r)
        histories.append(
            RunHistory(
                run_id=r,
                stream=stream,
                archive=archive.get(r, []),
                clients={c: log.events for (rid, c), log in clients.items() if rid == r},
                usage_events=float(usage_ids),
                ledger=ledger_calls,
            )
        )
    for r in acked:
        histories.append(
            RunHistory(run_id=r, acked=acked[r], stream=streams[r], archive=streams[r])
        )
    return Judged(check(histories), completed, endings, archive_wait_s, stored)


async def wait_usage_settled(
    plat: ClusterPlatform, run_ids: list[str], timeout: float, ledger: _Ledger | None = None
) -> None:
    """Until the ledger counts every usage id of the runs, or `timeout` (the table shows what
    is left). A node still catching up after a healed fault may answer 503: asked again."""
    if ledger is None:
        async with _Ledger(plat) as own:
            return await wait_usage_settled(plat, run_ids, timeout, own)
    from runloom.runtime.eventlog import TRANSIENT_ERRORS

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = True
        for r in run_ids:
            if time.monotonic() > deadline:
                return
            try:
                want = await ledger.usage_ids(r)
            except TRANSIENT_ERRORS:
                done = False
                break
            got = await ledger.calls(r)
            done = done and got >= want
        if done:
            return
        await asyncio.sleep(0.5)


# -- faults ------------------------------------------------------------------------------------

Fault = Callable[["ClusterPlatform"], Awaitable[None]]


async def heal(plat: ClusterPlatform) -> None:
    """Every node up and current again before the next fault."""
    assert plat.cluster is not None
    for node in plat.cluster.nodes:
        if not node.running:
            await asyncio.to_thread(node.start)
    await asyncio.to_thread(plat.cluster.wait_healthy, 60.0)
    for proc in plat.procs.values():
        if not proc.running:
            proc.start()
    for url in plat.gateways:
        await asyncio.to_thread(wait_http, f"{url}/readyz", 60.0)


async def leader_sigkill(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    node = plat.cluster.nodes[await plat.stream_leader()]
    node.kill()
    await asyncio.sleep(5)
    await asyncio.to_thread(node.start)


async def node_sigstop_10s(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    node = plat.cluster.nodes[await plat.stream_leader()]
    node.pause()
    await asyncio.sleep(10)
    node.resume()


async def partition_heal(plat: ClusterPlatform) -> None:
    i = await plat.stream_leader()
    plat.lab.partition(i)
    await asyncio.sleep(10)
    plat.lab.heal(i)


async def majority_loss(plat: ClusterPlatform) -> None:
    """Two of three nodes SIGKILLed for 10 s: the stream has no quorum, so an append fails with
    a clear error (nothing acknowledged is lost); after they return everything resumes."""
    from runloom.contracts.ids import new_id
    from runloom.runtime.eventlog import EventLog, StoreUnavailable

    assert plat.cluster is not None
    leader = await plat.stream_leader()
    lost = [plat.cluster.nodes[leader], plat.cluster.nodes[(leader + 1) % 3]]
    began = asyncio.get_running_loop().time()
    for node in lost:
        node.kill()
    try:
        nc = await plat.connect("chaos-probe", "orchestrator")
        try:
            probe = EventLog(nc.jetstream(), "chaos-probe", max_retries=4, publish_timeout=1.0)
            try:
                await probe.append(new_id("run"), plat.tenant, type="step.progress", data={})
            except StoreUnavailable as exc:
                assert "majority" in str(exc), exc
            else:
                raise AssertionError("an append without a majority of nodes was acknowledged")
        finally:
            await nc.close()
        await asyncio.sleep(max(0.0, 10.0 - (asyncio.get_running_loop().time() - began)))
    finally:
        for node in lost:
            await asyncio.to_thread(node.start)


async def rolling_restart(plat: ClusterPlatform) -> None:
    assert plat.cluster is not None
    for node in plat.cluster.nodes:
        await asyncio.to_thread(node.lame_duck)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(plat.cluster.wait_healthy, 60.0, [node])


async def service_replicas_sigkill(plat: ClusterPlatform) -> None:
    killed = [plat.procs[f"{s}-1"] for s in ("gateway", "orchestrator", "deliverables", "billing")]
    for proc in killed:
        proc.kill()
    await asyncio.sleep(5)
    for proc in killed:
        proc.start()
    await asyncio.to_thread(wait_http, f"{plat.gateways[0]}/readyz", 60.0, killed[0])


async def postgres_immediate_stop(plat: ClusterPlatform) -> None:
    await asyncio.to_thread(plat.pg_stop_immediate)
    await asyncio.sleep(3)
    await asyncio.to_thread(plat.postgres.start)


async def proxy_latency_and_resets(plat: ClusterPlatform) -> None:
    for proxy in plat.proxies:
        proxy.delay_s = 0.05
    await asyncio.sleep(4)
    for proxy in plat.proxies:
        proxy.delay_s = 0.0
    for _ in range(3):
        for proxy in plat.proxies:
            proxy.reset()
        await asyncio.sleep(1.5)
    plat.proxies[0].half_open = True
    await asyncio.sleep(4)
    plat.proxies[0].half_open = False


FAULTS: list[tuple[str, Fault, bool]] = [
    ("SIGKILL stream leader", leader_sigkill, True),
    ("partition leader 10 s, heal", partition_heal, False),
    ("SIGSTOP leader 10 s", node_sigstop_10s, False),
    ("SIGKILL one replica of each service", service_replicas_sigkill, False),
    ("proxy latency, resets, half-open", proxy_latency_and_resets, False),
    ("PostgreSQL stop -m immediate", postgres_immediate_stop, False),
    ("rolling restart, lame duck", rolling_restart, False),
    ("majority (2 of 3 nodes) lost 10 s", majority_loss, False),
]


"""Each fault: its name, what it does, whether `make test` runs it (the others: `make chaos`)."""


COLUMNS = (
    ("fault", "fault"),
    ("acked", "acked"),
    ("lost", "lost"),
    ("duplicates", "dup"),
    ("reorders", "reorder"),
    ("holes", "holes"),
    ("bad_terminal", "terminal!=1"),
    ("ledger_mismatch", "ledger!=usage"),
    ("server_errors", "5xx"),
    ("resets", "resets"),
    ("runs_completed", "runs done"),
    ("longest_delay_s", "longest ack->client s"),
    ("longest_gap_s", "longest gap s"),
    ("longest_append_s", "longest append s"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The fault table as Markdown (what `make chaos` prints and the README holds)."""
    head = "| " + " | ".join(t for _k, t in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(str(r.get(k, "")) for k, _t in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


if __name__ == "__main__":
    import sys

    report = Path(sys.argv[1])
    lines = report.read_text().splitlines() if report.exists() else []
    print(table([json.loads(line) for line in lines if line.strip()]))
