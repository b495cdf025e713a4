"""The dashboard and alert rules as files: rules pass `promtool check rules`, and every metric
the dashboard, the rules and the README name is one the services really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/observability/prometheus-rules.yaml"
DASHBOARD = ROOT / "deploy/observability/grafana-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> set[str]:
    """Every runloom_* family the six services register (names as exposed)."""
    import runloom.billing.metrics
    import runloom.billing_client._metrics
    import runloom.deliverables.metrics
    import runloom.gateway.metrics as gateway
    import runloom.lifecycle.metrics
    import runloom.orchestrator.metrics
    import runloom.runtime.consumer
    import runloom.runtime.metrics
    import runloom.webhooks.metrics  # noqa: F401
    from prometheus_client import REGISTRY

    hub = SimpleNamespace(
        client_count=0, feeds={}, delivered=0, pushed=0, gaps_repaired=0, stalled_cut=0
    )
    saved, gateway.STREAMING.hub = gateway.STREAMING.hub, hub
    try:
        names = {s.name for family in REGISTRY.collect() for s in family.samples} | {
            family.name for family in REGISTRY.collect()
        }
    finally:
        gateway.STREAMING.hub = saved
    return {n for n in names if n.startswith("runloom_")}


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def named_in(text: str) -> set[str]:
    return set(re.findall(r"\brunloom_[a-z_]+", text))


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make promtool` installs Debian's prometheus package")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_dashboard_and_rules_name_only_exported_metrics() -> None:
    known = exported()
    known_families = {family(n) for n in known}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for where, text in (("dashboard", "\n".join(exprs)), ("rules", RULES.read_text())):
        unknown = {n for n in named_in(text) if n not in known and family(n) not in known_families}
        assert not unknown, f"{where} names metrics no service exports: {sorted(unknown)}"


def test_readme_lists_every_metric() -> None:
    readme = named_in((ROOT / "README.md").read_text())
    missing = sorted(
        {family(n) for n in exported()} - {family(n) for n in readme},
    )
    assert not missing, f"README does not list: {missing}"
