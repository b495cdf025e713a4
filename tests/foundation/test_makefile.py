"""The Makefile's own logic: uv bootstrap on a machine without uv, no-tests is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )


def test_setup_installs_uv_privately_when_it_is_missing() -> None:
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert python, "the test needs a python3 outside the virtualenv"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    if shutil.which("uv", path=env["PATH"]):
        env["PATH"] = "/usr/bin:/bin"
    done = _make("-B", "-n", "setup", env=env)
    assert done.returncode == 0, done.stderr
    assert "-m venv .cache/uv" in done.stdout
    assert ".cache/uv/bin/python -m pip install" in done.stdout
    assert ".cache/uv/bin/uv sync --frozen" in done.stdout


def test_no_collected_tests_fail_the_run() -> None:
    done = _make("pytest", "PYTEST_ARGS=tests/foundation/test_readme.py -k no_such_test_name")
    assert done.returncode != 0
    assert "pytest collected no tests (exit 5): that is a failure" in done.stderr
