"""Process-wide settings every service applies once at start, before it serves."""

from __future__ import annotations

import gc

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
