"""checkov's Kubernetes checks on every rendered overlay (from its own environment, made by
`make k8s-tools` under .cache/checkov: its pins clash with ours)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import CHECKOV


@pytest.mark.timeout(300)
def test_checkov_passes_every_check_it_runs(
    checkers: dict[str, tuple[subprocess.Popen[bytes], Path]],
) -> None:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make k8s-tools` (make test does)"
    proc, out = checkers["checkov"]
    proc.wait(timeout=280)
    text = out.read_text(errors="replace")
    report = json.loads(
        text[text.index("{") if text.lstrip().startswith("{") else text.index("[") :]
    )
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 500, passed
    assert proc.returncode == 0, out.with_suffix(".err").read_text()[-2000:]
