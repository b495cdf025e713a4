"""The `runloom` command against the running platform, driven as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

RUNLOOM = str(Path(sys.executable).parent / "runloom")
QUESTION = "How do Python generators and the yield statement work?"
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.budget_stopped"}


def cli_env(platform: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RUNLOOM_URL": platform.url,
        "RUNLOOM_API_KEY": platform.api_key,
        "RUNLOOM_HOME": str(tmp_path / "no-home"),  # never the developer's .runloom/
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Cli:
    """A running `runloom` process whose output is collected line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [RUNLOOM, *args],
            env=env,
            cwd=Path(env["RUNLOOM_HOME"]).parent,  # artifacts default to ./runloom-out/
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            # Ctrl-C as a terminal sends it: a runner that started the tests with SIGINT
            # ignored (a background job without job control) would pass that on to the CLI.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None and not cond():
                time.sleep(0.2)  # let the pumps drain what the process wrote last
                if cond():
                    return
                raise AssertionError(f"runloom exited before {what}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.text()}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            msg = f"runloom still running after {timeout} s:\n{self.text()}"
            raise AssertionError(msg) from None
        time.sleep(0.2)
        return code

    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr\n" + "\n".join(self.err)


def history(platform: Any, run_id: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{platform.url}/v1/runs/{run_id}/events",
        params={"format": "json", "limit": 5000},
        headers=platform.headers(),
    )
    r.raise_for_status()
    return [item["event"] for item in r.json()["events"]]


def new_run(platform: Any, question: str, **body: Any) -> str:
    r = httpx.post(
        f"{platform.url}/v1/runs",
        json={"question": question, **body},
        headers=platform.headers(),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_ask_shows_the_run_live_and_saves_its_artifacts(
    platform: Any, corpus: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    cli = Cli(
        ["ask", QUESTION, "--deliverables", "report", "--budget", "5", "--out", str(out_dir)],
        cli_env(platform, tmp_path),
    )
    code = cli.finish(timeout=90)
    text = "\n".join(cli.out)
    assert code == 0, cli.text()
    run_id = re.search(r"^Run (run_\w+)$", text, re.M)
    assert run_id, cli.text()
    events = history(platform, run_id.group(1))
    assert events[-1]["type"] == "run.completed"
    # The live view: the plan with its parallel lane, each step done once, each source once,
    # the report as streamed, spend, and the end.
    assert "Plan:" in text and "‖ parallel group" in text
    steps = next(e for e in events if e["type"] == "plan.proposed")["data"]["steps"]
    done = [ln for ln in cli.out if ln.startswith("  ✓ done")]
    assert len(done) == len(steps), cli.text()
    for step in steps:
        assert any(f"✓ done     {step['title']}" in ln for ln in done), (step, cli.text())
    found = [e["data"] for e in events if e["type"] == "source.found"]
    source_lines = [ln for ln in cli.out if re.match(r"\s+\+ \[\d+\] ", ln)]
    assert len(source_lines) == len(found) > 0
    report = "".join(
        e["data"]["text"]
        for e in events
        if e["type"] == "message.delta" and e["data"]["stream"] == "report"
    )
    # Every line of the report, in order, once (step lines may come between its sections).
    report_lines = [ln for ln in report.splitlines() if ln.strip()]
    assert report_lines
    assert [ln for ln in cli.out if ln in set(report_lines)] == report_lines
    assert re.search(r"● completed.* — spent \$\d", text), text
    # The artifacts, saved and identical to what the gateway lists.
    listed = httpx.get(
        f"{platform.url}/v1/runs/{run_id.group(1)}/deliverables", headers=platform.headers()
    ).json()
    names = {a["file_name"] for a in listed["items"]}
    saved = {p.name for p in out_dir.iterdir()}
    assert saved == names and any(n.endswith(".pdf") for n in saved), (saved, names)
    assert all((out_dir / n).stat().st_size > 0 for n in saved)
    # `runloom usage` shows the run's spend from billing's ledger (written as events arrive).
    metered = sum(e["data"].get("cost_usd", 0) for e in events if e["type"] == "usage.recorded")
    calls = sum(e["type"] == "usage.recorded" for e in events)
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(
            [RUNLOOM, "usage", "--run", run_id.group(1)],
            env=cli_env(platform, tmp_path),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        if f"calls={calls}" in r.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert f"calls={calls}" in r.stdout, r.stdout
    assert f"spent ${metered:.2f}" in r.stdout or f"spent ${metered:.4f}" in r.stdout, r.stdout


@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.01")
def test_watch_resumes_after_a_gateway_restart_without_repeating(
    platform: Any, corpus: str, tmp_path: Path
) -> None:
    run_id = new_run(platform, QUESTION, options={"deliverables": []})
    cli = Cli(["watch", run_id, "--json"], cli_env(platform, tmp_path))
    seen = lambda: [json.loads(line) for line in list(cli.out)]  # noqa: E731
    cli.wait_for("the report streaming", lambda: any(e["type"] == "message.delta" for e in seen()))
    before = len(seen())
    gateway = platform["gateway-1"]
    gateway.kill()
    gateway.start()
    platform.wait_ready(gateway)
    assert cli.finish(timeout=90) == 0, cli.text()
    events = seen()
    assert all(e["type"] not in TERMINAL for e in events[:before])  # killed mid-run
    # Every event exactly once, in order, and just what the run stored.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events == history(platform, run_id)
    assert events[-1]["type"] == "run.completed"
    err = "\n".join(cli.err)
    assert "connection lost" in err and "reconnected" in err, err


# A slow writer keeps the report streaming long enough for Ctrl-C to land before the run ends
# (at 0.01 s a token, a loaded CI machine once saw the whole report before the interrupt).
@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.05")
def test_ctrl_c_asks_to_cancel_the_run(platform: Any, corpus: str, tmp_path: Path) -> None:
    cli = Cli(["ask", QUESTION, "--deliverables", "report"], cli_env(platform, tmp_path))
    cli.wait_for("the report streaming", lambda: "Report:" in cli.out)
    cli.proc.send_signal(signal.SIGINT)
    code = cli.finish(timeout=30)
    text = "\n".join(cli.out)
    assert code == 130, cli.text()
    assert "■ cancel requested" in text
    ended = [i for i, ln in enumerate(cli.out) if ln.startswith("● cancelled")]
    assert len(ended) == 1 and ended[0] > cli.out.index("  ■ cancel requested"), cli.text()
    assert any("cancelling the run" in ln for ln in cli.err)
    run_id = re.search(r"^Run (run_\w+)$", text, re.M)
    assert run_id is not None
    types = [e["type"] for e in history(platform, run_id.group(1))]
    assert types[-1] == "run.cancelled" and "cancel.requested" in types


@pytest.mark.platform_services("gateway")
def test_errors_say_what_to_do(platform: Any, tmp_path: Path) -> None:
    env = cli_env(platform, tmp_path, RUNLOOM_API_KEY="rlk_wrong")
    r = subprocess.run([RUNLOOM, "runs"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 4
    assert "RUNLOOM_API_KEY" in r.stderr and ".runloom/api-key" in r.stderr
    env = cli_env(platform, tmp_path, RUNLOOM_URL="http://127.0.0.1:9")
    r = subprocess.run([RUNLOOM, "runs"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert "Cannot reach the gateway at http://127.0.0.1:9" in r.stderr
    assert "make run" in r.stderr
    r = subprocess.run(
        [RUNLOOM, "ask", "q", "--deliverables", "report,poster"],
        env=cli_env(platform, tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "unknown deliverable poster" in r.stderr


@pytest.mark.platform_services("gateway", "orchestrator")
def test_docs_add_uploads_files_and_folders_then_runs_lists(platform: Any, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "zebras.md").write_text("# Zebras\n\nZebras have black and white stripes.\n")
    (folder / "sub" / "okapi.txt").write_text("The okapi is related to the giraffe.\n")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    env = cli_env(platform, tmp_path)
    r = subprocess.run(
        [RUNLOOM, "docs", "add", str(folder)], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 documents added" in r.stdout and "skipped" in r.stderr and "photo.png" in r.stderr
    docs = httpx.get(f"{platform.url}/v1/documents", headers=platform.headers()).json()
    assert {d["title"] for d in docs["documents"]} >= {"Zebras"}
    run_id = new_run(platform, "What stripes do zebras have?", options={"deliverables": []})
    r = subprocess.run([RUNLOOM, "runs"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and run_id in r.stdout and "zebras" in r.stdout, r.stdout


def test_ask_in_a_terminal_prompts_for_a_clarification(
    platform: Any, corpus: str, tmp_path: Path
) -> None:
    """In a real terminal (a pty), the paused run's question is answered at the prompt."""
    import pty

    main_fd, child_fd = pty.openpty()
    args = ["ask", "Can you help me with something?", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(
        [RUNLOOM, *args, "--deliverables", "report"],
        env=cli_env(platform, tmp_path),
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        close_fds=True,
    )
    os.close(child_fd)
    seen = bytearray()

    def read_until(marker: bytes, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in seen:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"no {marker!r} within {timeout} s:\n{seen.decode()}")
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # the terminal closed: the process ended
                raise AssertionError(f"runloom ended before {marker!r}:\n{seen.decode()}") from None
            seen.extend(chunk)

    try:
        read_until(b"your answer")
        assert b"? The run asks:" in seen
        os.write(main_fd, b"generators and the yield statement\n")
        read_until(b"completed")
        assert proc.wait(30) == 0, seen.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    text = seen.decode(errors="replace")
    assert "answered; the run continues" in text
    assert "\x1b[" in text  # a terminal gets colour
