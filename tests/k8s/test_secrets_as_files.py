"""Secrets reach containers as files, each workload only its own: its NATS identity and its
database URL (no Secret in an environment variable anywhere: checkov's CKV_K8S_35 runs)."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_manifests import SERVICES, WITH_DATABASE, containers, one, pod_spec, workloads

Objs = dict[str, list[dict[str, Any]]]


TLS = "runloom-nats-tls"


def _secrets_of(workload: dict[str, Any]) -> set[str]:
    """The Secrets a workload mounts; the TLS Secret only when it takes `ca.crt` alone."""
    names = set()
    for v in pod_spec(workload).get("volumes", []):
        if "secret" in v:
            name = v["secret"]["secretName"]
            if name == TLS and v["secret"].get("items") == [{"key": "ca.crt", "path": "ca.crt"}]:
                continue  # the CA certificate, public
            names.add(name)
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_no_secret_is_in_an_environment_variable(rendered: Objs, overlay: str) -> None:
    for w in workloads(rendered[overlay]):
        for c in containers(w):
            for var in c.get("env", []):
                assert "secretKeyRef" not in var.get("valueFrom", {}), (w["metadata"], var)
            for source in c.get("envFrom", []):
                assert "secretRef" not in source, (w["metadata"], source)


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_each_workload_mounts_only_its_own_credentials(rendered: Objs, overlay: str) -> None:
    objs = rendered[overlay]
    for service in SERVICES:
        d = one(objs, "Deployment", service)
        own = {f"runloom-nats-{service}"}
        if service in WITH_DATABASE:
            own.add(f"runloom-db-{service}")
        extra = {"runloom-openai"} if service == "orchestrator" else set()
        assert own <= _secrets_of(d) <= own | extra, _secrets_of(d)
        (c,) = containers(d)
        env = {v["name"]: v.get("value") for v in c["env"]}
        assert env["RUNLOOM_NATS_CREDENTIALS"] == f"/var/run/secrets/runloom/nats/{service}.nk"
    job = one(objs, "Job", "runloom-release")
    assert _secrets_of(job) == {"runloom-nats-admin"} | {
        f"runloom-db-{n}" for n in ("admin", *WITH_DATABASE)
    }
    assert _secrets_of(one(objs, "StatefulSet", "nats")) <= {TLS}
    backup = one(objs, "CronJob", "runloom-backup")
    assert _secrets_of(backup) == {"runloom-nats-backup", "runloom-db-backup"}
