"""The rendered production overlay, run for real: its NATS configuration booted as a 3-node
cluster, and each container's command and environment started against it until its probes
answer (see local_cluster.py for what is mapped onto this machine, and nothing else is)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import secrets
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT
from k8s_manifests import WITH_DATABASE, config_map, container_env, containers, find, one
from local_cluster import Cluster, Pod, port_env
from runloom.devkit.embedded import free_port, nats_server_binary
from runloom.devkit.testing import wait_ended
from runloom.runtime import roles

Objs = dict[str, list[dict[str, Any]]]
NATS_PORTS = {"NATS_CLIENT_PORT": 4222, "NATS_CLUSTER_PORT": 6222, "NATS_MONITOR_PORT": 8222}
TLS_KEYS = ("tls.crt", "tls.key", "ca.crt")
HAS_MANAGEMENT = importlib.util.find_spec("runloom.runtime.management") is not None


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_nats_server_accepts_the_rendered_config(
    rendered: Objs, overlay: str, tmp_path: Path
) -> None:
    users, _seeds = identities(tmp_path / "home")
    objs = [*rendered[overlay], users]
    (c,) = one(objs, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"]
    certs = node_tls(tmp_path / "tls")
    for name, text in config_map(objs, "nats-config")["data"].items():
        (tmp_path / name).write_text(text)
    conf = tmp_path / "nats.conf"
    env = container_env(objs, c, pod_name="nats-0")
    for name in ("NATS_TLS_CERT", "NATS_TLS_KEY", "NATS_TLS_CA"):  # the Secret's mount, here
        if name in env:
            env[name] = env[name].replace("/etc/nats-tls", str(certs.ca.parent))
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout + done.stderr
    # Without the identities' public keys the server does not start at all.
    no_users = {k: v for k, v in env.items() if not k.startswith("RUNLOOM_NKEY_")}
    refused = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        env=no_users,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "RUNLOOM_NKEY_ADMIN" in refused.stderr + refused.stdout


def node_tls(directory: Path) -> Any:
    """What cert-manager would write into `runloom-nats-tls`, from a local CA (the harness
    maps every node name to 127.0.0.1), under the Secret's key names."""
    from runloom.devkit import tls as devtls

    made = devtls.ensure(directory, ["127.0.0.1"])
    for key, src in (("tls.crt", made.cert), ("tls.key", made.key), ("ca.crt", made.ca)):
        (directory / key).write_bytes(src.read_bytes())
    return made


def identities(home: Path) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """As the platform team would make them (deploy/k8s/README.md): one seed per identity, each
    in its Secret `runloom-nats-<identity>` (key `seed`), and the public keys in the ConfigMap
    `runloom-nats-users` the NATS pods read."""
    from runloom.devkit import busauth
    from runloom.runtime import access

    keys = busauth.key_environment(home)
    users = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "runloom-nats-users"},
        "data": keys,
    }
    seeds = {
        (f"runloom-nats-{i.name}", "seed"): busauth.credential(home, i.name).read_text()
        for i in busauth.IDENTITIES
    }
    assert set(keys) == {access.key_variable(i.name) for i in busauth.IDENTITIES}
    return users, seeds


def test_the_image_tag_is_the_tested_nats_server(rendered: Objs) -> None:
    (c,) = one(rendered["production"], "StatefulSet", "nats")["spec"]["template"]["spec"][
        "containers"
    ]
    tag = re.fullmatch(r"nats:(\d+\.\d+\.\d+)-alpine", c["image"])
    assert tag, c["image"]
    version = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    assert f"v{tag.group(1)}" in version, f"image {c['image']} but tests run {version}"


@pytest.fixture(scope="module")
def cluster(
    rendered: Objs, tmp_path_factory: pytest.TempPathFactory, servers: Any
) -> Iterator[Cluster]:
    """The production overlay's NATS StatefulSet as three local nodes, started and current."""
    home = tmp_path_factory.mktemp("k8s-identities")
    users, seeds = identities(home)
    objs = [*rendered["production"], users]
    database = f"k8s_{secrets.token_hex(4)}"
    server = servers.database_url.rsplit("/", 1)[0]
    url = f"{server}/{database}"
    asyncio.run(_create_database(f"{server}/postgres", database))
    # As the platform team would: the administrator's URL for the Job, each service its own
    # role (the Job creates the roles and sets these passwords).
    secret_values = {("runloom-db-admin", "url"): url} | {
        (f"runloom-db-{name}", "url"): roles.service_url(url, name, secrets.token_urlsafe(12))
        for name in WITH_DATABASE
    }
    certs = node_tls(home / "tls")
    tls = {("runloom-nats-tls", k): (certs.ca.parent / k).read_text() for k in TLS_KEYS}
    local = Cluster(objs, tmp_path_factory.mktemp("k8s-live"), secret_values | seeds | tls)
    local.home = home  # type: ignore[attr-defined]
    local.ca = certs.ca  # type: ignore[attr-defined]
    sts = one(objs, "StatefulSet", "nats")
    nodes = [local.pod(sts, i) for i in range(sts["spec"]["replicas"])]
    try:
        for node in nodes:
            local.finish(node, extra=port_env(node, NATS_PORTS))
            node.start()
        for node in nodes:
            node.wait_probe("startupProbe", timeout=60)
        yield local
    finally:
        for pod in local.pods.values():
            pod.kill()


def test_three_rendered_nodes_form_a_durable_cluster(cluster: Cluster) -> None:
    nodes = [cluster.pods[f"nats-{i}"] for i in range(3)]
    for node in nodes:
        node.wait_probe("readinessProbe", timeout=30)
        node.wait_probe("livenessProbe", timeout=30)
        monitor = node.local(8222)
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz", timeout=5) as resp:
            jsz = json.load(resp)
        assert jsz["config"]["sync_always"] is True, "sync_interval: always"
        assert jsz["meta_cluster"]["cluster_size"] == 3
        assert node.env["NATS_SERVER_NAME"] == node.name
    asyncio.run(_only_known_identities(cluster))


async def _only_known_identities(cluster: Cluster) -> None:
    """A live node refuses an anonymous client and takes the admin identity."""
    import nats
    from runloom.devkit import busauth

    url = f"nats://127.0.0.1:{cluster.pods['nats-0'].local(4222)}"
    tls = ssl.create_default_context(cafile=str(cluster.ca))  # type: ignore[attr-defined]
    with pytest.raises(Exception, match=r"(?i)authorization"):
        async with asyncio.timeout(10):
            await nats.connect(url, tls=tls, allow_reconnect=False, max_reconnect_attempts=0)
    seed = busauth.credential(cluster.home, "admin")  # type: ignore[attr-defined]
    nc = await nats.connect(url, nkeys_seed=str(seed), tls=tls, allow_reconnect=False)
    await nc.close()


@pytest.mark.timeout(300)
def test_rendered_services_wait_for_the_release_then_serve_a_run_and_stop_in_time(
    cluster: Cluster, rendered: Objs
) -> None:
    objs = rendered["production"]
    closed = free_port()  # the trace collector is not part of this test: export goes nowhere
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
    services: dict[str, Pod] = {}
    for d in find(objs, "Deployment"):
        pod = cluster.pod(d, 0)
        names = {"RUNLOOM_MANAGEMENT_PORT": 9090}
        if d["metadata"]["name"] == "gateway":
            names["RUNLOOM_GATEWAY_PORT"] = 8080
        cluster.finish(pod, extra={**port_env(pod, names), **otel})
        services[d["metadata"]["name"]] = pod
    # Services first, as `kubectl apply` would: alive, but waiting for the release.
    for pod in services.values():
        pod.start()
    if HAS_MANAGEMENT:
        for pod in services.values():
            pod.wait_probe("startupProbe", timeout=60)
            status, _ = pod.probe("readinessProbe")
            assert status != 200, f"{pod.name} is ready before the release Job ran"
    _wait_log(services["orchestrator"], "waiting for the release Job", timeout=60)
    # The release Job: each of its containers in order, as rendered.
    job = one(objs, "Job", "runloom-release")
    for c in containers(job):
        step = cluster.finish(cluster.pod(job, 0, c["name"]), extra=otel)
        step.start()
        assert step.proc is not None
        assert step.proc.wait(120) == 0, f"release step {c['name']} failed:\n{step.tail()}"
    if HAS_MANAGEMENT:
        for pod in services.values():
            pod.wait_probe("readinessProbe", timeout=90)
            pod.wait_probe("livenessProbe", timeout=10)
    # A tenant (the README's `kubectl exec deploy/gateway -- python -m runloom.admin tenant`),
    # a document and a run with a report: every service does its part on the R3 streams.
    gateway = services["gateway"]
    made = subprocess.run(
        [gateway.argv[0], "-m", "runloom.admin", "tenant", "acme"],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    run = asyncio.run(_ask(f"http://127.0.0.1:{gateway.local(8080)}", key))
    assert run["ended_by"] == "run.completed", run
    assert run["spent_usd"] > 0, "billing recorded the run's usage"
    # SIGTERM as the kubelet sends it (after preStop): each ends within its grace period.
    for pod in services.values():
        took = pod.terminate()
        assert took < pod.grace_s, f"{pod.name} outlived terminationGracePeriodSeconds"
        # 0, or SIGTERM's own status from uvicorn, which re-raises the signal once its
        # graceful shutdown is complete.
        assert pod.proc is not None and pod.proc.returncode in (0, -15), pod.tail()
        assert "stopped" in pod.tail() or "shutdown complete" in pod.tail(), pod.tail()


async def _ask(base: str, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        doc = await client.post("/v1/documents", json=DOCUMENT)
        assert doc.status_code == 201, doc.text
        created = await client.post(
            "/v1/runs",
            json={
                "question": "How do JetStream work queues redeliver a message?",
                "options": {"deliverables": ["report"]},
            },
        )
        assert created.status_code == 201, created.text
        return await wait_ended(client, created.json()["id"], timeout=120)


DOCUMENT = {
    "title": "JetStream work queues",
    "text": "A JetStream work queue stream keeps each message until a consumer acknowledges "
    "it. When the ack wait passes without an acknowledgement, the server redelivers the "
    "message to the durable pull consumer, possibly to another client. A consumer extends "
    "the deadline with an in-progress acknowledgement; max deliver bounds redeliveries.",
}


def _wait_log(pod: Pod, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in pod.tail():
        assert pod.proc is not None and pod.proc.poll() is None, pod.tail()
        assert time.monotonic() < deadline, f"{pod.name} never logged {text!r}:\n{pod.tail()}"
        time.sleep(0.2)


def test_lame_duck_prestop_takes_a_node_out_within_its_grace(cluster: Cluster) -> None:
    node = cluster.pods["nats-2"]
    prestop = list(node.container["lifecycle"]["preStop"]["exec"]["command"])
    assert prestop[0] == "nats-server"
    argv = [nats_server_binary(), *prestop[1:]]
    argv = [a if not a.startswith("ldm=") else "ldm=" + node.path(a[4:]) for a in argv]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert node.proc is not None
    node.proc.wait(node.grace_s)
    assert time.monotonic() - started < node.grace_s
    assert "lame duck" in node.tail().lower()
    for survivor in ("nats-0", "nats-1"):
        cluster.pods[survivor].wait_probe("livenessProbe", timeout=30)


async def _create_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def test_the_local_cluster_runs_the_same_nats_template() -> None:
    """`runloom up --cluster` (the dev kit) starts its nodes from this very file."""
    from runloom.devkit.cluster import nats_template

    assert nats_template() == ROOT / "deploy" / "k8s" / "base" / "nats" / "nats.conf"
