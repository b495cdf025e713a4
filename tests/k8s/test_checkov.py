"""checkov's Kubernetes checks on every rendered overlay (from its own environment, made by
`make k8s-tools` under .cache/checkov: its pins clash with ours)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import K8S, ROOT

CHECKOV = ROOT / ".cache" / "checkov" / "bin" / "checkov"


@pytest.mark.timeout(300)
def test_checkov_passes_every_check_it_runs(rendered_text: dict[str, str], tmp_path: Path) -> None:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make k8s-tools` (make test does)"
    args = []
    for overlay, text in rendered_text.items():
        (tmp_path / f"{overlay}.yaml").write_text(text)
        args += ["-f", str(tmp_path / f"{overlay}.yaml")]
    done = subprocess.run(
        [str(CHECKOV), "--config-file", str(K8S / "checkov.yaml"), "-o", "json", *args],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_UPDATE_CHECK": "1"},
    )
    report = json.loads(done.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in (report if isinstance(report, dict) else report[0])["results"]["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["passed"] > 500, summary
    assert done.returncode == 0, done.stderr[-2000:]
