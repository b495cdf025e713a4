"""Reading rendered objects the way the cluster would: pod specs, env, probes, selectors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
SERVICES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks", "lifecycle")
WITH_DATABASE = ("gateway", "orchestrator", "deliverables", "billing", "webhooks")
"""The services with a schema and a role of their own (lifecycle holds no table)."""
OPERATOR_MADE = {"runloom-nats-users"}
"""ConfigMaps the platform team makes at install time (deploy/k8s/README.md)."""


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(objs: list[Obj]) -> Iterator[Obj]:
    return (o for o in objs if o["kind"] in WORKLOADS)


def pod_template(workload: Obj) -> Obj:
    """The pod template (a CronJob's is inside its job template)."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"])


def pod_spec(workload: Obj) -> Obj:
    return dict(pod_template(workload)["spec"])


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(pod_template(workload)["metadata"].get("labels", {}))


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def config_map(objs: list[Obj], prefix: str) -> Obj:
    """A generated ConfigMap by its base name (kustomize appends a content hash)."""
    found = [
        o for o in find(objs, "ConfigMap") if o["metadata"]["name"].rsplit("-", 1)[0] == prefix
    ]
    assert len(found) == 1, f"expected one ConfigMap {prefix}-<hash>, found {len(found)}"
    return found[0]


def container_env(
    objs: list[Obj],
    container: Obj,
    *,
    pod_name: str,
    secrets: dict[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    """The environment the kubelet would give `container` (envFrom, then env)."""
    cms = {o["metadata"]["name"]: o.get("data", {}) for o in find(objs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        if name in OPERATOR_MADE and name not in cms:
            continue  # made at install time, not rendered (a test that boots NATS adds it)
        env.update(cms[name])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name", ref
            env[var["name"]] = pod_name
        elif "configMapKeyRef" in ref:
            env[var["name"]] = cms[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            if secrets is not None and key in secrets:
                env[var["name"]] = secrets[key]
            elif not ref["secretKeyRef"].get("optional"):
                env[var["name"]] = f"<secret {key[0]}/{key[1]}>"
        else:
            raise AssertionError(f"unsupported valueFrom {ref}")
    return env


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Does a label selector (matchLabels / matchExpressions) select these labels?"""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p["name"] == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port}")
