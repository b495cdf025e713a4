"""Pytest plugin: real nats-server and PostgreSQL for the whole test session.

Loaded for every test by `-p runloom.devkit.testing` (root pyproject). Fixtures:

- `servers`: the session's `NatsServer` and `PostgresServer` (each `.kill()` / `.start()` /
  `.restart()` on the same data folder, for fault tests).
- `settings`: `Settings` pointing at them; its database URL is the superuser's, with a
  search_path over every service's schema (unqualified table names work in tests).
- `nc`, `js`: a NATS client connected as `admin` and its JetStream context, streams
  provisioned. nats-server requires authentication: each identity's nkey seed is under
  `settings.home/secrets/nats` (`devkit.busauth`); `nats_as("gateway")` connects as a service
  (a test acting as that service), and `platform` hands each process only its own.
- `pool`: an asyncpg pool on the migrated database (the superuser's, every schema visible).
- `service_database_urls`: service -> the URL of its own role (least privilege), which the
  `platform` processes connect with.
- `tmp_home`: a fresh `RUNLOOM_HOME` folder for a test.

With `RUNLOOM_TEST_DOCKER=1` and a reachable Docker engine, testcontainers provides the
servers instead (same fixtures; kill/restart then act on the containers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from runloom.devkit.embedded import (
    PG_SYSTEM_BASE,
    NatsServer,
    PostgresServer,
    free_port,
    remove_stale_system_dirs,
)
from runloom.runtime.config import Settings


@dataclass
class Servers:
    nats: Any
    postgres: Any
    root: Path

    @property
    def nats_url(self) -> str:
        return str(self.nats.url)

    @property
    def database_url(self) -> str:
        return str(self.postgres.url)


def _docker_requested() -> bool:
    if os.environ.get("RUNLOOM_TEST_DOCKER") != "1":
        return False
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
        return True
    except Exception:
        return False


class _ContainerServer:
    """A testcontainers container behind the same kill/start/restart/url interface."""

    def __init__(self, container: Any, url_fn: Any) -> None:
        self.container = container
        self._url_fn = url_fn

    @property
    def url(self) -> str:
        return str(self._url_fn(self.container))

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def start(self) -> None:
        self.container.get_wrapped_container().start()

    def restart(self) -> None:
        self.container.get_wrapped_container().restart()

    def stop(self) -> None:
        self.container.stop()


def _start_containers(root: Path) -> Servers:  # pragma: no cover - needs a Docker engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.postgres import PostgresContainer

    nats = DockerContainer("nats:2.12").with_command("-js").with_exposed_ports(4222)
    nats.start()
    pg = PostgresContainer(
        "postgres:16", username="postgres", password="postgres", dbname="runloom"
    )
    pg.start()
    return Servers(
        nats=_ContainerServer(
            nats, lambda c: f"nats://{c.get_container_host_ip()}:{c.get_exposed_port(4222)}"
        ),
        postgres=_ContainerServer(
            pg, lambda c: c.get_connection_url(driver=None).replace("postgresql+None", "postgresql")
        ),
        root=root,
    )


def orphaned_postgres_folder(name: str, origin: Path) -> Path | None:
    """As root: a folder `name` under /var/lib/runloom as a session killed before its clean-up
    leaves it (its origin `origin` deleted, no server running), for tests of its removal.
    None when not root (PostgreSQL's folders then live in the data folder itself)."""
    if os.geteuid() != 0:
        return None
    if not PG_SYSTEM_BASE.exists():
        PG_SYSTEM_BASE.mkdir()
        PG_SYSTEM_BASE.chmod(0o755)  # what PostgresServer expects of it
    stale = PG_SYSTEM_BASE / name
    (stale / "pgdata").mkdir(parents=True)
    (stale / "origin").write_text(f"{origin}\n")
    return stale


def _quietly(stop: Any) -> None:
    with contextlib.suppress(Exception):
        stop()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Each server is registered for clean-up before it starts: whatever fails (a server that
    does not come up, a test, an interrupt), everything started here is stopped."""
    root = Path(tempfile.mkdtemp(prefix="runloom-test-", dir=os.environ.get("RUNLOOM_TEST_TMP")))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        if _docker_requested():  # pragma: no cover
            s = _start_containers(root)
            cleanup.callback(_quietly, s.nats.stop)
            cleanup.callback(_quietly, s.postgres.stop)
        else:
            from runloom.devkit import busauth

            nats = NatsServer(
                root / "nats", free_port(), authorization=busauth.prepare(root / "home")
            )
            cleanup.callback(_quietly, nats.stop)
            nats.start()
            if os.geteuid() == 0:
                # Sessions killed before their clean-up leave PostgreSQL folders behind.
                remove_stale_system_dirs()
            pg = PostgresServer(root / "postgres", free_port())
            cleanup.callback(_quietly, pg.remove_data)
            pg.start()
            s = Servers(nats=nats, postgres=pg, root=root)
        yield s


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Settings:
    from runloom.devkit import busauth, database

    home = servers.root / "home"
    return replace(
        Settings.from_env(),
        nats_url=servers.nats_url,
        database_url=database.admin_url(servers.database_url),
        home=home,
        nats_credentials=str(busauth.credential(home, "admin")),
    )


_PASSWORDS: dict[str, str] = {}


def _passwords() -> dict[str, str]:
    from runloom.devkit import database

    if not _PASSWORDS:
        _PASSWORDS.update(database.new_passwords())
    return _PASSWORDS


@pytest.fixture(scope="session")
def service_database_urls(servers: Servers) -> dict[str, str]:
    from runloom.runtime import db, roles

    return {s: roles.service_url(servers.database_url, s, _passwords()[s]) for s in db.SERVICES}


@pytest.fixture(scope="session")
async def _provisioned(servers: Servers, settings: Settings) -> None:
    from runloom.devkit import database
    from runloom.runtime import bus

    await database.provision(servers.database_url, _passwords())
    nc = await bus.connect_as(settings, "runloom-tests-provision")
    try:
        await bus.provision(nc.jetstream(), settings)
    finally:
        await nc.close()


@pytest.fixture
async def nc(settings: Settings, _provisioned: None) -> AsyncIterator[Any]:
    from runloom.runtime import bus

    client = await bus.connect_as(settings, "runloom-tests")
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
async def nats_as(settings: Settings, _provisioned: None) -> AsyncIterator[Any]:
    """`await nats_as("billing")`: a client connected as that identity (closed after the test);
    `nats_as(None)` connects with no credential at all."""
    from runloom.devkit import busauth
    from runloom.runtime import bus

    clients: list[Any] = []

    async def connect(identity: str | None, **kwargs: Any) -> Any:
        cred = str(busauth.credential(settings.home, identity)) if identity else ""
        client = await bus.connect(
            settings.effective_nats_url, f"test-{identity}", credentials=cred, **kwargs
        )
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


@pytest.fixture
async def js(nc: Any) -> Any:
    return nc.jetstream()


@pytest.fixture
async def pool(settings: Settings, _provisioned: None) -> AsyncIterator[Any]:
    from runloom.runtime import db

    p = await db.create_pool(settings.effective_database_url, max_size=20)
    try:
        yield p
    finally:
        with contextlib.suppress(Exception):
            await p.close()


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[Any]:
    """A 3-node JetStream cluster on loopback (`devkit.cluster.NatsCluster`), one per session,
    as cluster mode runs it: authentication (seeds in its root) and TLS for clients and routes
    (`.ca`, `.credential(identity)`). A test that kills, pauses or cuts off nodes brings them
    back before it ends."""
    from runloom.devkit.cluster import NatsCluster

    root = Path(tempfile.mkdtemp(prefix="runloom-cluster-"))
    c = NatsCluster(
        root,
        ["127.0.0.1"] * 3,
        [(free_port(), free_port(), free_port()) for _ in "abc"],
        tls=True,
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def cluster_js(nats_cluster: Any, settings: Settings) -> AsyncIterator[Any]:
    """JetStream on `nats_cluster` (every server's address), streams provisioned R3."""
    from runloom.runtime import bus

    nc = await bus.connect(
        nats_cluster.urls,
        "test-cluster",
        credentials=nats_cluster.credential("admin"),
        ca=nats_cluster.ca,
    )
    try:
        js = nc.jetstream()
        await bus.provision(js, replace(settings, nats_url=nats_cluster.urls, stream_replicas=3))
        yield js
    finally:
        await nc.close()


@pytest.fixture
def tmp_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


# -- the whole platform as real processes (e2e) -------------------------------------------------


class Platform:
    """Gateway and services as real processes against the session's servers.

    `platform.api_key` is a fresh tenant's key (`platform.tenant_id` its id); `platform.url` the
    gateway's base URL.
    Add replicas with `platform.add("orchestrator")`; fault tests `.kill()` and `.start()` them.
    """

    def __init__(self, settings: Settings, root: Path, env: dict[str, str]) -> None:
        from runloom.devkit.embedded import free_port

        self.settings = settings
        self.root = root
        self.port = free_port()
        from runloom.devkit import database

        self.env = {
            "RUNLOOM_NATS_URL": settings.effective_nats_url,
            "RUNLOOM_DATABASE_URL": settings.effective_database_url,
            **database.service_env(settings.effective_database_url, _passwords()),
            "RUNLOOM_GATEWAY_PORT": str(self.port),
            "RUNLOOM_HOME": str(root),
            "RUNLOOM_LOG_FORMAT": "json",
            **env,
        }
        self.procs: dict[str, Any] = {}
        self.management: dict[str, str] = {}
        """Process name -> base URL of its management port."""
        self.api_key = ""
        self.tenant_id = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, service: str, replica: str | None = None) -> Any:
        from runloom.devkit.supervisor import ServiceProcess

        replica = replica or str(1 + sum(1 for p in self.procs.values() if p.service == service))
        port = free_port()  # each process its own management port (/metrics, /readyz)
        env = {**self.env_for(service), "RUNLOOM_MANAGEMENT_PORT": str(port)}
        proc = ServiceProcess(service, env, self.root / "logs", replica=replica)
        proc.start()
        self.procs[proc.name] = proc
        self.management[proc.name] = f"http://127.0.0.1:{port}"
        if service == "gateway":
            self.wait_ready(proc)
        elif service == "billing":
            # The gateway's usage and budget routes ask billing: a test may call them at once.
            from runloom.devkit.supervisor import wait_http

            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30.0, proc=proc)
        return proc

    def env_for(self, service: str) -> dict[str, str]:
        """The environment of one of `service`'s processes: the platform's, and the path of
        that service's own NATS credential (and no other's)."""
        from runloom.devkit import busauth

        cred = busauth.credential(self.settings.home, service)
        return {**self.env, "RUNLOOM_NATS_CREDENTIALS": str(cred)}

    def wait_ready(self, proc: Any = None, timeout: float = 30.0) -> None:
        from runloom.devkit.supervisor import wait_http

        wait_http(f"{self.url}/readyz", timeout=timeout, proc=proc or self.procs.get("gateway-1"))

    def wait_all_ready(self, timeout: float = 60.0) -> None:
        """Until every process answers /readyz on its management port (consumers and
        responders started: e.g. the documents API needs the orchestrator, which owns them)."""
        from runloom.devkit.supervisor import wait_http

        for name, base in self.management.items():
            wait_http(f"{base}/readyz", timeout=timeout, proc=self.procs[name])

    def __getitem__(self, name: str) -> Any:
        return self.procs[name]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(3000)}" for n, p in self.procs.items())


async def _new_tenant(settings: Settings, name: str) -> str:
    from runloom.devkit.database import create_heavy_tenant
    from runloom.runtime import db

    p = await db.create_pool(settings.effective_database_url, max_size=2)
    try:
        return await create_heavy_tenant(p, name, name)
    finally:
        await p.close()


@pytest.fixture
async def platform(
    settings: Settings, _provisioned: None, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    """Gateway + orchestrator + deliverables + billing (one replica each), and a fresh tenant.

    A test may set extra environment for the processes with
    `@pytest.mark.platform_env(NAME="value")`, and choose services with
    `@pytest.mark.platform_services("gateway", "orchestrator")`.
    """
    import uuid

    env_marker = request.node.get_closest_marker("platform_env")
    svc_marker = request.node.get_closest_marker("platform_services")
    env = dict(env_marker.kwargs) if env_marker else {}
    services = (
        svc_marker.args if svc_marker else ("gateway", "orchestrator", "deliverables", "billing")
    )
    plat = Platform(settings, tmp_path / "platform", env)
    plat.tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    plat.api_key = await _new_tenant(settings, plat.tenant_id)
    try:
        for service in services:
            plat.add(service)
        plat.wait_all_ready()
        yield plat
    finally:
        plat.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(plat.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "platform_env(**env): environment for platform processes")
    config.addinivalue_line("markers", "platform_services(*names): services the platform starts")
    config.addinivalue_line(
        "markers",
        "make_target(name, env): collected only when `env`=1, which `make <name>` sets",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) tests that belong to a longer make target: `make test` reports them as
    deselected, so a skip always means something could not run."""
    keep, dropped = [], []
    for item in items:
        mark = item.get_closest_marker("make_target")
        on = mark is None or os.environ.get(mark.kwargs["env"]) == "1"
        (keep if on else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# -- HTTP helpers for tests that drive the platform as a user would -----------------------------


async def wait_ended(client: Any, run_id: str, timeout: float = 90) -> dict[str, Any]:
    """Poll GET /v1/runs/{id} (an httpx.AsyncClient on the gateway) until the run has ended."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/v1/runs/{run_id}")
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        if run["ended_by"]:
            return run
        assert time.monotonic() < deadline, f"run did not end within {timeout}s: {run}"
        await asyncio.sleep(0.25)


async def wait_usage(client: Any, run_id: str, calls: int, timeout: float = 20) -> dict[str, Any]:
    """Poll GET /v1/usage?run_id= until the ledger holds `calls` rows (it follows the events)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get("/v1/usage", params={"run_id": run_id})
        if r.status_code == 200 and r.json()["totals"]["calls"] >= calls:
            return r.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"ledger did not reach {calls} calls: {r.text}"
        await asyncio.sleep(0.2)


async def artifact_digests(client: Any, run_id: str) -> dict[str, str]:
    """Download every artifact of the run (GET /v1/runs/{id}/deliverables, then each URL):
    the sha256 hex of its bytes, by URL."""
    import hashlib

    listing = (await client.get(f"/v1/runs/{run_id}/deliverables")).json()
    out: dict[str, str] = {}
    for deliverable in listing["deliverables"]:
        for art in deliverable["artifacts"]:
            r = await client.get(art["url"])
            assert r.status_code == 200, r.text
            out[art["url"]] = hashlib.sha256(r.content).hexdigest()
    return out
