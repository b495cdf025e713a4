"""Every overlay renders, validates strictly against two Kubernetes versions, and has the shape
its environment promises (nodes, stream replicas, service replicas)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import KUBERNETES_VERSIONS, OVERLAYS
from k8s_manifests import SERVICES, config_map, find, one


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlays_validate_strictly(
    checkers: dict[str, tuple[subprocess.Popen[bytes], Path]], version: str
) -> None:
    proc, out = checkers[f"validate-{version}"]
    returncode = proc.wait(timeout=280)
    assert returncode == 0, out.read_text() + out.with_suffix(".err").read_text()


def _replicas(objs: list[dict[str, Any]], name: str) -> int:
    hpa = find(objs, "HorizontalPodAutoscaler", name)
    if hpa:
        return int(hpa[0]["spec"]["minReplicas"])
    return int(one(objs, "Deployment", name)["spec"].get("replicas", 1))


def test_production_is_three_nodes_r3_and_two_replicas_or_more(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["production"]
    assert one(objs, "StatefulSet", "nats")["spec"]["replicas"] == 3
    nats_env = config_map(objs, "nats-env")["data"]
    assert nats_env["NATS_CLUSTER_PORT"] == "6222"
    assert nats_env["NATS_ROUTES"].count("nats://") == 3
    config = config_map(objs, "runloom-config")["data"]
    assert config["RUNLOOM_STREAM_REPLICAS"] == "3"
    assert config["RUNLOOM_NATS_URL"].count("nats://") == 3, "clients get every node"
    for name in SERVICES:
        assert _replicas(objs, name) >= 2, name
    assert {h["metadata"]["name"] for h in find(objs, "HorizontalPodAutoscaler")} == {
        "gateway",
        "orchestrator",
    }
    assert find(objs, "Ingress", "gateway")


def test_dev_is_one_node_and_one_replica_each(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["dev"]
    assert one(objs, "StatefulSet", "nats")["spec"]["replicas"] == 1
    nats_env = config_map(objs, "nats-env")["data"]
    assert nats_env["NATS_CLUSTER_PORT"] == "0", "one node runs without a cluster"
    assert nats_env["NATS_ROUTES"] == "[]"
    config = config_map(objs, "runloom-config")["data"]
    assert config["RUNLOOM_STREAM_REPLICAS"] == "1"
    assert config["RUNLOOM_NATS_URL"] == "nats://nats-0.nats-headless:4222"
    for name in SERVICES:
        assert _replicas(objs, name) == 1, name
    assert not find(objs, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_one_pss_restricted_namespace(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = rendered[overlay]
    (ns,) = find(objs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    name = ns["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == name for o in objs if o is not ns)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_committed(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    assert not find(rendered[overlay], "Secret"), "Secrets are referenced, never rendered"
