"""`/debug/heap` on the management port: with RUNLOOM_TRACEMALLOC, what grew between two calls
(in a process of its own: tracemalloc would slow every other test of the session)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import asyncio, urllib.request
from runloom.runtime.management import ManagementServer

async def main():
    server = ManagementServer("127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}/debug/heap"
    get = lambda: urllib.request.urlopen(url, timeout=10).read().decode()
    await asyncio.to_thread(get)
    kept = [bytearray(1024) for _ in range(2000)]  # about 2 MiB that stays: what a leak does
    print(await asyncio.to_thread(get))
    await server.close()
    return kept

asyncio.run(main())
"""


def test_heap_growth_between_two_calls_names_the_line_that_allocated() -> None:
    env = {**os.environ, "RUNLOOM_TRACEMALLOC": "4"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[1].split()  # the largest growth, after the "traced" line
    kib, blocks = float(first[0]), int(first[2])
    assert 2000 <= kib <= 2400 and blocks >= 2000, done.stdout
    assert first[first.index("KiB)") + 1] == "<string>:11", done.stdout  # the allocating line
