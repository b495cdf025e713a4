"""A service hands the memory glibc holds free back to the system (`process.trim_memory_every`):
without it, a heap whose freed chunks sit below live ones keeps them resident for good.
In a process of its own: the test fragments its heap on purpose."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import time, psutil
from prometheus_client import REGISTRY
from runloom.runtime.process import trim_memory_every

mib = lambda: psutil.Process().memory_info().rss / 2**20
base = mib()
blocks = [bytearray(2000) for _ in range(40_000)]  # about 80 MiB, each from malloc
kept = blocks[::8]  # one in eight stays alive, spread over the whole heap
del blocks
held = mib()
still = mib()  # glibc kept the freed chunks: they sit below live ones
if trim_memory_every(0.1) is None:
    print("no-glibc")
    raise SystemExit(0)
took = lambda: REGISTRY.get_sample_value("runloom_memory_trim_seconds") or 0.0
deadline = time.monotonic() + 10  # until a trim has ended (its gauge set) and RSS dropped
while (mib() > still - 40 or not took()) and time.monotonic() < deadline:
    time.sleep(0.05)
print(f"{base:.1f} {held:.1f} {still:.1f} {mib():.1f} {took()} {len(kept)}")
"""


def test_freed_memory_goes_back_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "no-glibc":
        pytest.fail("this platform's C library has no malloc_trim: the services cannot trim")
    base, held, still, after, took, kept = done.stdout.split()
    assert float(still) - float(base) > 50, done.stdout  # retained without the trimmer
    assert float(still) - float(after) >= 40, done.stdout  # handed back with it
    assert float(took) > 0, done.stdout
    assert int(kept) == 5000
