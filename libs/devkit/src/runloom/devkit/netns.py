"""Hosts in Linux network namespaces on one bridge (iproute2, root only), for fault tests.

`NetLab(n)` makes `n` namespaces, each with one veth into a bridge that also holds an address in
the calling namespace, so processes there (the services, the test) reach every host. A partition
takes a host's link down: its connections stall as on a real network (no reset), and come back
when the link does. Everything is named with a per-lab tag and deleted by `close()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess


def available() -> str | None:
    """None when namespaces can be made here; otherwise why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed (make chaos installs it with apt-get)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class NetLab:
    """`n` hosts `10.<net>.0.2 …` on a bridge whose own address is `10.<net>.0.1`."""

    def __init__(self, n: int, *, net: int | None = None) -> None:
        self.tag = f"rl{os.getpid() % 100000}"
        self.net = net if net is not None else 100 + os.getpid() % 150
        self.bridge = f"{self.tag}br"
        self.names = [f"{self.tag}h{i + 1}" for i in range(n)]
        self.hosts = [f"10.{self.net}.0.{i + 2}" for i in range(n)]
        self.gateway = f"10.{self.net}.0.1"
        self._made: list[tuple[str, ...]] = []

    def _veth(self, i: int) -> str:
        return f"{self.tag}v{i + 1}"

    def open(self) -> NetLab:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", "del", self.bridge))
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, (ns, host) in enumerate(zip(self.names, self.hosts, strict=True)):
                veth = self._veth(i)
                _ip("netns", "add", ns)
                self._made.append(("netns", "del", ns))
                _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
                self._made.append(("link", "del", veth))
                _ip("link", "set", f"{veth}p", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{host}/24", "dev", f"{veth}p")
                _ip("-n", ns, "link", "set", f"{veth}p", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def partition(self, i: int) -> None:
        """Cut host `i` off from every other host and from the calling namespace."""
        _ip("link", "set", self._veth(i), "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self._veth(i), "up")

    def close(self) -> None:
        for args in reversed(self._made):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _ip(*args)
        self._made.clear()

    def __enter__(self) -> NetLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
