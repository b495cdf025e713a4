"""Process-wide settings every service applies once at start, before it serves."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
"""Container allocations between two young-generation collections (Python's default: 700).

A service keeps many objects alive at once (a writer's waiting appends, their tasks and
futures; the gateway's feeds and clients), and every collection walks the generations it
collects: with the default, a writer streaming 5,000 events spent about a fifth of its CPU
collecting. Nearly everything it allocates is freed by reference counting anyway; reference
cycles are still collected, later."""


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never walk what start-up made (imports, config):
    `gc.freeze` moves it to a generation no collection visits."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


TRIM_EVERY_S = 30.0
"""How often a service hands the memory its allocator holds free back to the system."""


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def trim_memory_every(seconds: float = TRIM_EVERY_S) -> threading.Thread | None:
    """Hand the pages the C allocator holds free back to the system every `seconds`, from a
    thread of its own; the thread, or None where the C library cannot (then nothing runs).

    glibc frees a heap's memory to the system only from its top. Under a steady load a
    service's heap is a mix of short-lived buffers (messages, TLS records, query results) and a
    few long-lived ones placed above them, so freed memory below stays in the process: a soak
    saw resident memory climb 13-21 % an hour in services whose Python objects did not grow
    (tracemalloc flat), and `malloc_trim(0)` gave all of it back. The call walks the free
    chunks and releases whole free pages anywhere in the heap; on a service's heap of tens of
    MiB it takes about a millisecond, outside the event loop (ctypes releases the GIL).
    `runloom_memory_trim_seconds` shows how long the last one took."""
    trim = _malloc_trim()
    if trim is None:
        return None
    from runloom.runtime import metrics

    def loop() -> None:
        while True:
            time.sleep(seconds)
            began = time.perf_counter()
            trim()
            metrics.MEMORY_TRIM_SECONDS.set(time.perf_counter() - began)

    thread = threading.Thread(target=loop, name="malloc-trim", daemon=True)
    thread.start()
    return thread


def tune_memory() -> None:
    """The collector tuned (`tune_gc`) and freed memory handed back (`trim_memory_every`)."""
    tune_gc()
    trim_memory_every()


def raise_open_files(need: int = 0) -> int:
    """Raise this process's soft limit on open files to its hard limit; the soft limit after.

    A gateway holds a socket per SSE client, and many systems start processes with a soft
    limit of 1,024 under a far higher hard one. `need`: the files this process must be able to
    hold; OSError, naming the limits and how to raise them, when the hard limit is below it.
    Children started afterwards inherit the raised limit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if hard != infinite and need > hard:
        raise OSError(
            f"{need} open files are needed but the hard limit is {hard} (soft {soft}): "
            f"raise it (`ulimit -Hn {need}` as root, LimitNOFILE= in a systemd unit, "
            "nofile in /etc/security/limits.conf or the container runtime's ulimits)"
        )
    if soft == infinite:
        return max(need, 1 << 20)
    # An infinite hard limit still stops at the kernel's nr_open: ask for what is needed.
    target = hard if hard != infinite else max(soft, need, 1 << 16)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            if need > soft:
                raise OSError(
                    f"{need} open files are needed; the soft limit {soft} "
                    f"could not be raised: {exc}"
                ) from exc
    return int(soft)
