"""Our own policy on the rendered objects: Pod Security Standards "restricted", probes,
resources and disruption budgets on every service, the NATS settings that durability and
rolling upgrades rely on, and manifests that say what the code reads."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest
from conftest import OVERLAYS, ROOT
from k8s_manifests import (
    SERVICES,
    config_map,
    container_env,
    containers,
    find,
    one,
    pod_labels,
    pod_spec,
    port_number,
    selects,
    workloads,
)

Objs = dict[str, list[dict[str, Any]]]
# Volume types the "restricted" profile allows.
PSS_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
PSS_VOLUMES |= {"projected", "secret"}


def _quantity(q: str | int) -> float:
    """A Kubernetes quantity (2Gi, 500m, 1800MiB for GOMEMLIMIT) as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    units |= {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m, q
    return float(m.group(1)) * units.get(m.group(2), 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_pss_restricted(rendered: Objs, overlay: str) -> None:
    for w in workloads(rendered[overlay]):
        where = f"{overlay} {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{where}: {host}"
        assert spec.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            kinds = set(v) - {"name"}
            assert kinds <= PSS_VOLUMES, f"{where}: volume {v['name']} is {kinds}"
        for c in containers(w):
            sc = c.get("securityContext", {})
            at = f"{where} container {c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not sc.get("capabilities", {}).get("add"), at
            assert not sc.get("privileged"), at
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, at
            assert all("hostPort" not in p for p in c.get("ports", [])), at
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{at}: /tmp is no emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(rendered: Objs, overlay: str) -> None:
    for w in workloads(rendered[overlay]):
        for c in containers(w):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    assert what in res.get(part, {}), f"{w['metadata']['name']}/{c['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_probes_on_the_management_port_and_a_pdb(
    rendered: Objs, overlay: str
) -> None:
    objs = rendered[overlay]
    pdbs = find(objs, "PodDisruptionBudget")
    deployments = find(objs, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    for d in deployments:
        name = d["metadata"]["name"]
        (c,) = pod_spec(d)["containers"]
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz"}
        expected["readinessProbe"] = "/readyz"
        for probe, path in expected.items():
            get = c[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, "management"), f"{name} {probe}"
        assert port_number(c, "management") == 9090
        labels = pod_labels(d)
        covering = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name} has {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"].get("maxUnavailable") == 1


# The management port (docs/architecture.md) is read once runtime.management exists.
_NOT_YET_READ = (
    {"RUNLOOM_MANAGEMENT_HOST", "RUNLOOM_MANAGEMENT_PORT"}
    if importlib.util.find_spec("runloom.runtime.management") is None
    else set()
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_the_commands_and_ports_the_code_serves(
    rendered: Objs, overlay: str
) -> None:
    """The manifest beside the code: command, ports and variables agree with what it reads."""
    objs = rendered[overlay]
    sources = "\n".join(
        p.read_text()
        for part in ("libs", "services", "src")
        for p in (ROOT / part).rglob("*.py")
        if ".venv" not in p.parts
    )
    for w in workloads(objs):
        if w["metadata"]["name"] == "nats":
            continue
        for c in containers(w):
            if not c["image"].startswith("runloom:"):
                continue  # the backup's pg_dump (test_backup_cronjob_dumps_then_snapshots)
            command = c["command"]
            assert command[:2] == ["python", "-m"], command
            module = command[2]
            assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
            env = container_env(objs, c, pod_name=f"{w['metadata']['name']}-0")
            for var in env:
                if var.startswith("RUNLOOM_") and var not in _NOT_YET_READ:
                    assert f'"{var}"' in sources, f"{var} is set but no code reads it"
            if command[3:] == []:
                assert env["RUNLOOM_MANAGEMENT_PORT"] == str(port_number(c, "management"))
                assert env["RUNLOOM_MANAGEMENT_HOST"] == "0.0.0.0"
                assert env["RUNLOOM_MIGRATE_ON_START"] == "false", "the release Job migrates"
            if module == "runloom.gateway":
                assert env["RUNLOOM_GATEWAY_PORT"] == str(port_number(c, "http"))
                assert env["RUNLOOM_GATEWAY_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_release_job_provisions_then_migrates(rendered: Objs, overlay: str) -> None:
    job = one(rendered[overlay], "Job", "runloom-release")
    spec = pod_spec(job)
    commands = [c["command"] for c in containers(job)]
    assert commands == [
        ["python", "-m", "runloom.admin", "provision"],
        ["python", "-m", "runloom.admin", "migrate"],
    ]
    assert spec["restartPolicy"] == "OnFailure"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backup_cronjob_dumps_then_snapshots_with_its_own_identity(
    rendered: Objs, overlay: str
) -> None:
    objs = rendered[overlay]
    cron = one(objs, "CronJob", "runloom-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(cron)
    assert spec["serviceAccountName"] == "runloom-backup"
    account = one(objs, "ServiceAccount", "runloom-backup")
    assert account["automountServiceAccountToken"] is False
    bound = [b for b in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding")]
    assert not [b for b in bound for s in b.get("subjects", []) if s["name"] == "runloom-backup"]
    (dump,) = spec["initContainers"]
    (snap,) = spec["containers"]
    script = " ".join(dump["command"])
    assert "pg_dump --format=custom" in script and "PGPASSFILE=" in script
    assert not [e for e in dump.get("env", []) if "PASSWORD" in e["name"]], "password: a file"
    assert snap["command"][:4] == ["python", "-m", "runloom.admin", "backup"]
    (given,) = [a for a in snap["command"] if a.startswith("--postgres-dump=")]
    assert given.split("=", 1)[1] in script, "the backup takes the dump made just before"
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["backups"]["persistentVolumeClaim"]["claimName"]
    one(objs, "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_durable_guaranteed_and_upgradable_one_node_at_a_time(
    rendered: Objs, overlay: str
) -> None:
    objs = rendered[overlay]
    conf = config_map(objs, "nats-config")["data"]["nats.conf"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, flags=re.M), "fsync every write"
    sts = one(objs, "StatefulSet", "nats")
    spec = pod_spec(sts)
    (c,) = spec["containers"]
    res = c["resources"]
    assert res["requests"] == res["limits"], "requests = limits (Guaranteed QoS)"
    env = container_env(objs, c, pod_name="nats-0")
    assert _quantity(env["GOMEMLIMIT"]) < 0.95 * _quantity(res["limits"]["memory"])
    # Every variable the template needs is set, so nats-server starts.
    needed = set(re.findall(r"\$(NATS_[A-Z_]+)", conf))
    assert needed <= set(env), f"unset: {needed - set(env)}"
    assert env["NATS_SERVER_NAME"] == "nats-0"
    grace = _quantity(env["NATS_LAME_DUCK_DURATION"].rstrip("s"))
    grace += _quantity(env["NATS_LAME_DUCK_GRACE_PERIOD"].rstrip("s"))
    assert spec["terminationGracePeriodSeconds"] > grace, "lame duck must finish before SIGKILL"
    assert c["lifecycle"]["preStop"]["exec"]["command"][-1] == f"ldm={env['NATS_PID_FILE']}"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz", "started = streams current"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    (pdb,) = [p for p in find(objs, "PodDisruptionBudget") if p["metadata"]["name"] == "nats"]
    assert pdb["spec"]["maxUnavailable"] == 1
    headless = one(objs, "Service", "nats-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
