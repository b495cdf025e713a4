"""A local 3-node JetStream cluster from the one nats-server template the manifests use.

Each node is a real nats-server with routes to the others, `sync_interval: always` and lame-duck
settings, configured only through the template's `$NATS_*` environment variables and its include
files: `authorization.conf` (the generated users; their public keys from `$RUNLOOM_NKEY_*`,
`keys`), and with `tls` the `tls.conf` / `cluster-tls.conf` that turn TLS on for clients and
routes (as the Kubernetes production overlay does). Each node runs a copy of the template's
folder with those files. With `netns`, each node runs as its own host in a Linux network
namespace (see `runloom.devkit.netns`), so a partition cuts real connections.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runloom.devkit import tls as devtls
from runloom.devkit.embedded import ChildProcess, ServerError, nats_server_binary, port_open

LAME_DUCK_DURATION_S = 30
"""nats-server's minimum lame-duck duration."""
LAME_DUCK_GRACE_S = 5


def nats_template() -> Path:
    """The one NATS configuration template, deploy/k8s/base/nats/nats.conf of this clone."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "deploy" / "k8s" / "base" / "nats" / "nats.conf"
        if candidate.exists():
            return candidate
    raise ServerError(
        "deploy/k8s/base/nats/nats.conf not found: cluster mode runs from a clone of the repository"
    )


@dataclass
class NatsNode(ChildProcess):
    """One cluster node: `nats-server -c <template>` with its own `$NATS_*` environment."""

    name: str
    root: Path
    host: str
    port: int
    cluster_port: int
    monitor_port: int
    routes: Sequence[str]
    netns: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    """`RUNLOOM_NKEY_<IDENTITY>` -> public key, for the template's authorization.conf."""
    tls: devtls.ServerTls | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    stop_timeout = 10.0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def log_file(self) -> Path:
        return self.root / "nats-server.log"

    def env(self) -> dict[str, str]:
        return {
            "NATS_SERVER_NAME": self.name,
            "NATS_HOST": self.host,
            "NATS_CLIENT_PORT": str(self.port),
            "NATS_MONITOR_PORT": str(self.monitor_port),
            "NATS_PID_FILE": str(self.root / "nats-server.pid"),
            "NATS_LAME_DUCK_DURATION": f"{LAME_DUCK_DURATION_S}s",
            "NATS_LAME_DUCK_GRACE_PERIOD": f"{LAME_DUCK_GRACE_S}s",
            "NATS_STORE_DIR": str(self.root / "jetstream"),
            "NATS_MAX_MEMORY_STORE": "256MB",
            "NATS_MAX_FILE_STORE": "4GB",
            "NATS_CLUSTER_PORT": str(self.cluster_port),
            "NATS_ROUTES": "[" + ", ".join(self.routes) + "]",
            **self.keys,
        }

    def write_config(self) -> Path:
        """The template's folder, copied under the node's root; TLS files filled when on."""
        conf_dir = self.root / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        for src in nats_template().parent.glob("*.conf"):
            (conf_dir / src.name).write_text(src.read_text())
        if self.tls is not None:
            (conf_dir / "tls.conf").write_text(devtls.client_block(self.tls))
            (conf_dir / "cluster-tls.conf").write_text(devtls.route_block(self.tls))
        return conf_dir / nats_template().name

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, nats_server_binary(), "-c", str(self.write_config())],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise ServerError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")
            if port_open(self.port, self.host):
                return
            time.sleep(0.05)
        raise ServerError(f"{self.name} did not listen on {self.url} within {timeout}s")

    def monitor(self, path: str, timeout: float = 2.0) -> dict:
        url = f"http://{self.host}:{self.monitor_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))

    def healthy(self) -> bool:
        """JetStream on this node is enabled and current (the monitor's /healthz)."""
        try:
            return self.monitor("/healthz").get("status") == "ok"
        except OSError:
            return False
        except ValueError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the process is alive but answers nothing (a hung host)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def lame_duck(self, timeout: float = LAME_DUCK_DURATION_S + LAME_DUCK_GRACE_S + 15) -> None:
        """SIGUSR2: lame-duck mode (leaders handed over, clients told to move), then exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGUSR2)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class NatsCluster:
    """Three (or `size`) nodes with routes to each other; `urls` is what clients get."""

    def __init__(
        self,
        root: Path,
        hosts: Sequence[str],
        ports: Sequence[tuple[int, int, int]],
        *,
        netns: Sequence[str | None] | None = None,
        prefix: str = "n",
        home: Path | None = None,
        tls: bool = False,
    ) -> None:
        from runloom.devkit import busauth

        self.home = home or root
        """Where the identities' seeds are (`busauth.secrets_dir(home)`; default: `root`)."""
        keys = busauth.key_environment(self.home)
        tls_dir = busauth.secrets_dir(self.home) / "tls" if tls else None
        routes = [f"nats://{h}:{p[1]}" for h, p in zip(hosts, ports, strict=True)]
        self.tls = devtls.ensure(tls_dir, list(hosts)) if tls_dir is not None else None
        """With `tls_dir`: the CA (`self.tls.ca`, what clients verify with) and certificate."""
        spaces = list(netns) if netns else [None] * len(hosts)
        self.nodes = [
            NatsNode(
                name=f"{prefix}{i + 1}",
                root=root / f"{prefix}{i + 1}",
                host=host,
                port=client,
                cluster_port=cluster,
                monitor_port=mon,
                routes=routes,
                netns=spaces[i],
                keys=keys,
                tls=self.tls,
            )
            for i, (host, (client, cluster, mon)) in enumerate(zip(hosts, ports, strict=True))
        ]

    def credential(self, identity: str) -> Path:
        """The path of an identity's seed (what RUNLOOM_NATS_CREDENTIALS names)."""
        from runloom.devkit import busauth

        return busauth.credential(self.home, identity)

    @property
    def ca(self) -> str:
        """The CA file clients verify the nodes with (RUNLOOM_NATS_CA); empty without TLS."""
        return str(self.tls.ca) if self.tls is not None else ""

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (RUNLOOM_NATS_URL)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 30.0) -> None:
        for n in self.nodes:
            n.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0, nodes: Sequence[NatsNode] | None = None) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(nodes or self.nodes)
        while waiting:
            waiting = [n for n in waiting if not n.healthy()]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(n.name for n in waiting)
                raise ServerError(f"JetStream not current on {names} within {timeout}s")
            if waiting:
                time.sleep(0.1)

    def stop(self) -> None:
        for n in self.nodes:
            n.resume()
            n.stop()
