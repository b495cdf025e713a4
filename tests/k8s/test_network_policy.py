"""NetworkPolicies: deny everything, then exactly the flows the architecture has.

Flows are derived from the rendered policies the way a CNI enforces them (a connection needs
the source's egress AND the destination's ingress to allow it), then compared with the table
of what Runloom does: services talk to each other only over NATS; NATS nodes talk to each
other on the route port; every pod resolves names; PostgreSQL, the trace collector, the
ingress controller, Prometheus and (for the webhooks service) public HTTPS endpoints are the
only peers outside the namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import OVERLAYS
from k8s_manifests import SERVICES, WITH_DATABASE, containers, find, pod_labels, selects, workloads

Obj = dict[str, Any]
CLIENTS = (*SERVICES, "runloom-release", "runloom-backup")
ALL = ("nats", *CLIENTS)

INSIDE = {(c, "nats", 4222) for c in CLIENTS} | {("nats", "nats", 6222)}
DNS = {(w, "ns:kube-system", p) for w in ALL for p in ("53/UDP", "53/TCP")}
POSTGRES = {
    (w, "ip:10.0.0.0/8", "5432/TCP") for w in (*WITH_DATABASE, "runloom-release", "runloom-backup")
}
OTLP = {(s, "ns:observability", "4318/TCP") for s in SERVICES}
SCRAPE = {("ns:monitoring", s, "9090/TCP") for s in SERVICES}
INGRESS = {("ns:ingress-nginx", "gateway", "8080/TCP")}
WEBHOOKS = {("webhooks", "ip:0.0.0.0/0", "443/TCP"), ("webhooks", "ip:::/0", "443/TCP")}
OUTSIDE = {
    "dev": DNS | POSTGRES | SCRAPE | WEBHOOKS,
    "production": DNS | POSTGRES | OTLP | SCRAPE | INGRESS | WEBHOOKS,
}


def _policies(objs: list[Obj], pod: Obj, direction: str) -> list[Obj]:
    return [
        p
        for p in find(objs, "NetworkPolicy")
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pod_labels(pod))
    ]


def _port_ok(rule: Obj, port: int, protocol: str = "TCP") -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def _peer_is_pod(peer: Obj, labels: dict[str, str]) -> bool:
    """A same-namespace pod peer (no namespaceSelector, no ipBlock) matching `labels`."""
    return set(peer) == {"podSelector"} and selects(peer["podSelector"], labels)


def _allowed(objs: list[Obj], src: Obj, dst: Obj, port: int) -> bool:
    egress = any(
        _port_ok(rule, port) and any(_peer_is_pod(peer, pod_labels(dst)) for peer in rule["to"])
        for p in _policies(objs, src, "Egress")
        for rule in p["spec"].get("egress", [])
    )
    ingress = any(
        _port_ok(rule, port) and any(_peer_is_pod(peer, pod_labels(src)) for peer in rule["from"])
        for p in _policies(objs, dst, "Ingress")
        for rule in p["spec"].get("ingress", [])
    )
    return egress and ingress


def _outside_peer(peer: Obj) -> str | None:
    if "ipBlock" in peer:
        return f"ip:{peer['ipBlock']['cidr']}"
    if "namespaceSelector" in peer:
        return f"ns:{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"
    return None


def _outside_flows(objs: list[Obj]) -> set[tuple[str, str, str]]:
    flows = set()
    for w in workloads(objs):
        name = w["metadata"]["name"]
        for direction, key in (("Egress", "to"), ("Ingress", "from")):
            for p in _policies(objs, w, direction):
                for rule in p["spec"].get(direction.lower(), []):
                    for peer in rule.get(key, []):
                        other = _outside_peer(peer)
                        if other is None:
                            continue
                        for port in rule["ports"]:
                            pp = f"{port['port']}/{port.get('protocol', 'TCP')}"
                            flows.add((name, other, pp) if key == "to" else (other, name, pp))
    return flows


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_isolated_both_ways(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    deny = [
        p
        for p in find(objs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "a default deny-all policy"
    names = {w["metadata"]["name"] for w in workloads(objs)}
    assert names == set(ALL)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inside_the_namespace_only_the_bus_flows(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    pods = list(workloads(objs))
    flows = set()
    for src in pods:
        for dst in pods:
            for c in containers(dst):
                for port in c.get("ports", []):
                    if _allowed(objs, src, dst, port["containerPort"]):
                        flows.add(
                            (
                                src["metadata"]["name"],
                                dst["metadata"]["name"],
                                port["containerPort"],
                            )
                        )
    assert flows == INSIDE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_outside_the_namespace_exactly_the_listed_peers(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    assert _outside_flows(rendered[overlay]) == OUTSIDE[overlay]
