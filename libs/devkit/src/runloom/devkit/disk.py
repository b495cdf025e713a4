"""Size-limited filesystems for full-disk tests: a tmpfs mounted for the test's duration."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(
    mount: Path, size: str, *, mode: int = 0o700, uid: int | None = None, gid: int | None = None
) -> Iterator[Path]:
    """A tmpfs of `size` (`24m`) mounted at `mount` (made if missing) until the block ends.

    Mounting needs root and `mount` (as in CI): where it cannot be done this fails, loudly,
    rather than letting a full-disk test skip."""
    mount.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode={mode:o}"
    if uid is not None:
        options += f",uid={uid}"
    if gid is not None:
        options += f",gid={gid}"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        f"cannot mount a tmpfs for the full-disk test (it needs root and mount): {done.stderr}"
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
