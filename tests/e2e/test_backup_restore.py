"""The restore drill: an online backup while runs stream, restored into an empty home and
started with `runloom up`: the histories are identical (ids, seqs, stream sequences, bytes), a
cursor from before the backup resumes with exactly the remainder (over SSE too), the old API
key works, artifacts download with the same bytes, the archive agrees with the stream, and a
new run completes. The figures (backup size and time, restore time) are printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from runloom.devkit.embedded import NatsServer, PostgresServer, free_port, free_ports
from runloom.devkit.supervisor import SERVICES
from runloom.devkit.testing import artifact_digests, wait_ended
from runloom.runtime import bus, db

pytestmark = [
    pytest.mark.timeout(300),
    # The run in flight writes slowly enough to be streaming while the backup is taken.
    pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.03"),
]


def _run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "runloom.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    done = _run_cli(*args, env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def _start_up(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "runloom.cli.main", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


async def _history(client: httpx.AsyncClient, run_id: str, after: str | None = None) -> list[Any]:
    """Every (cursor, event) of the run after `after`, from the JSON pages."""
    items: list[Any] = []
    for _ in range(200):
        params = {"format": "json", "limit": "200", **({"after": after} if after else {})}
        r = await client.get(f"/v1/runs/{run_id}/events", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += [(i["cursor"], i["event"]) for i in page["events"]]
        if page["done"] or not page["events"]:
            return items
        after = page["next_cursor"]
    raise AssertionError("history longer than 200 pages")


async def _sse_after(base: str, key: str, run_id: str, cursor: str) -> list[tuple[str, str]]:
    """(id, data) of every SSE frame after `cursor` (Last-Event-ID) until the stream closes."""
    frames: list[tuple[str, str]] = []
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": cursor}
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as r,
    ):
        assert r.status_code == 200
        ident = data = ""
        async for line in r.aiter_lines():
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and ident:
                frames.append((ident, data))
                ident = data = ""
    return frames


async def _wait(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(0.2)


async def test_backup_while_runs_stream_restores_into_an_empty_home(
    platform: Any, corpus: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        # The session's servers, and its home (where the bus credentials are).
        "RUNLOOM_HOME": str(platform.settings.home),
        "RUNLOOM_NATS_URL": platform.settings.effective_nats_url,
        "RUNLOOM_NATS_CREDENTIALS": platform.settings.nats_credentials,  # admin's seed
        "RUNLOOM_DATABASE_URL": platform.settings.effective_database_url,
    }
    backup_dir = tmp_path / "backup"
    async with httpx.AsyncClient(
        base_url=platform.url, headers=platform.headers(), timeout=30
    ) as client:
        r = await client.post("/v1/runs", json={"question": "How do Python decorators work?"})
        assert r.status_code == 201, r.text
        done_id = r.json()["id"]
        assert (await wait_ended(client, done_id, 120))["ended_by"] == "run.completed"
        before = await _history(client, done_id)
        artifacts = await artifact_digests(client, done_id)
        assert artifacts

        r = await client.post("/v1/runs", json={"question": "How do generators work?"})
        live_id = r.json()["id"]

        async def streaming() -> bool:
            return any(e["type"] == "message.delta" for _c, e in await _history(client, live_id))

        await _wait(streaming, "the second run streams its report")
        at_start = await _history(client, live_id)
        started = time.monotonic()
        # As the backup identity: stream info and snapshots, nothing else.
        backup_env = {**env, "RUNLOOM_NATS_CREDENTIALS": _seed(platform.settings.home, "backup")}
        out = await asyncio.to_thread(_cli, "backup", str(backup_dir), env=backup_env)
        backup_s = time.monotonic() - started
        await wait_ended(client, live_id, 120)
        assert len(await _history(client, live_id)) > len(at_start), "it streamed on meanwhile"

    manifest = json.loads((backup_dir / "manifest.json").read_text())
    size = sum(f["bytes"] for f in manifest["files"])
    assert {f["path"] for f in manifest["files"]} >= {
        "postgres.dump",
        "streams/RUN_EVENTS.tar.s2",
        "streams/COMMANDS.tar.s2",
        "streams/JOBS.tar.s2",
        "streams/DEAD_LETTERS.tar.s2",
        "streams/OBJ_artifacts.tar.s2",
        "streams/OBJ_corpus-uploads.tar.s2",
    }
    point = manifest["recovery_point"]["events_last_stream_seq"]

    # Restore into an empty home; a home that is not empty is refused.
    home = tmp_path / "restored"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    refused = await asyncio.to_thread(
        _run_cli, "restore", str(backup_dir), "--home", str(tmp_path / "busy"), env=env
    )
    assert refused.returncode == 1 and "is not empty" in refused.stdout, refused.stdout
    clean = {
        k: v
        for k, v in env.items()
        if k not in ("RUNLOOM_HOME", "RUNLOOM_NATS_URL", "RUNLOOM_DATABASE_URL")
    }
    started = time.monotonic()
    await asyncio.to_thread(_cli, "restore", str(backup_dir), "--home", str(home), env=clean)
    restore_s = time.monotonic() - started

    gateway = free_port()
    up_env = {
        **clean,
        "RUNLOOM_HOME": str(home),
        "RUNLOOM_NATS_PORT": str(free_port()),
        "RUNLOOM_POSTGRES_PORT": str(free_port()),
        "RUNLOOM_GATEWAY_PORT": str(gateway),
        # One management port per service process, consecutive from this one.
        "RUNLOOM_MANAGEMENT_PORT": str(free_ports(len(SERVICES))),
    }
    up = _start_up(up_env, tmp_path / "up.out")
    started = time.monotonic()
    try:
        base = f"http://127.0.0.1:{gateway}"

        async def ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.out").read_text()
            return "Runloom is up." in (tmp_path / "up.out").read_text()

        await _wait(ready, "the restored home is up", 120)
        up_s = time.monotonic() - started
        async with httpx.AsyncClient(base_url=base, headers=platform.headers(), timeout=30) as c:
            # The old key works; the finished run is exactly as it was, byte for byte.
            after = await _history(c, done_id)
            assert after == before
            # A cursor from before the backup resumes with exactly the remainder, JSON and SSE.
            cut = len(before) // 2
            assert await _history(c, done_id, before[cut - 1][0]) == before[cut:]
            frames = await _sse_after(base, platform.api_key, done_id, before[cut - 1][0])
            assert [i for i, _d in frames] == [cur for cur, _e in before[cut:]]
            assert [json.loads(d) for _i, d in frames] == [e for _c, e in before[cut:]]
            assert await artifact_digests(c, done_id) == artifacts

            # The run in flight: what the backup holds is unchanged, and it ends visibly.
            restored_live = await _history(c, live_id)
            assert restored_live[: len(at_start)] == at_start
            ended = await wait_ended(c, live_id, 120)
            assert ended["ended_by"] in ("run.completed", "run.failed", "run.cancelled")

            # The archive and the read models agree with the stream once caught up.
            pool = await db.create_pool(
                f"postgresql://postgres@127.0.0.1:{up_env['RUNLOOM_POSTGRES_PORT']}/runloom"
                "?search_path=gateway",
                max_size=1,
            )
            try:

                async def agree() -> bool:
                    for run_id in (done_id, live_id):
                        stream = await _history(c, run_id)
                        row = await pool.fetchrow(
                            "SELECT count(*) AS n, max(seq) AS last FROM run_events"
                            " WHERE run_id=$1",
                            run_id,
                        )
                        model = await pool.fetchval("SELECT last_seq FROM runs WHERE id=$1", run_id)
                        if (row["n"], row["last"], model) != (
                            len(stream),
                            len(stream),
                            len(stream),
                        ):
                            return False
                    return True

                await _wait(agree, "archive and read model agree with the stream")
            finally:
                await pool.close()

            # A new run completes on the restored platform.
            r = await c.post("/v1/runs", json={"question": "How do Python decorators work?"})
            assert r.status_code == 201, r.text
            assert (await wait_ended(c, r.json()["id"], 120))["ended_by"] == "run.completed"
    finally:
        up.send_signal(2)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        # As root the restored home's PostgreSQL data lives under /var/lib/runloom: not left.
        PostgresServer(home / "postgres", 0).remove_data()
    print(
        f"\nrestore drill: backup {size / 1e6:.2f} MB in {backup_s:.2f} s "
        f"(events up to stream seq {point}); restore {restore_s:.2f} s; "
        f"runloom up on the restored home ready in {up_s:.2f} s\n{out.strip()}"
    )


def _seed(home: Path, identity: str) -> str:
    from runloom.devkit import busauth

    return str(busauth.credential(home, identity))


def _admin(env: dict[str, str], *args: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "runloom.admin", *args],
        env={**env, "RUNLOOM_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_admin_backup_restores_into_empty_servers_and_refuses_live_ones(
    settings: Any, _provisioned: None, tmp_path: Path
) -> None:
    """The admin commands against external servers: backup, restore into a new nats-server
    and PostgreSQL, the release then in place; restoring over them again is refused."""
    env = {
        **os.environ,
        "RUNLOOM_NATS_URL": settings.effective_nats_url,
        "RUNLOOM_NATS_CREDENTIALS": settings.nats_credentials,  # the admin identity's seed
        "RUNLOOM_DATABASE_URL": settings.effective_database_url,
    }
    backup_env = {**env, "RUNLOOM_NATS_CREDENTIALS": _seed(settings.home, "backup")}
    done = await asyncio.to_thread(_admin, backup_env, "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())

    nats_server = NatsServer(tmp_path / "nats", free_port())
    postgres = PostgresServer(tmp_path / "pg", free_port())
    await asyncio.to_thread(nats_server.start)
    try:
        await asyncio.to_thread(postgres.start)
        target = {**env, "RUNLOOM_NATS_URL": nats_server.url, "RUNLOOM_DATABASE_URL": postgres.url}
        for command in (("restore", str(tmp_path / "b")), ("migrate",), ("check",)):
            done = await asyncio.to_thread(_admin, target, *command)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "release in place" in done.stdout
        nc = await bus.connect(nats_server.url, "test-restore")
        try:
            js = nc.jetstream()
            for name, described in manifest["streams"].items():
                state = (await js.stream_info(name)).state
                assert (state.last_seq, state.messages) == (
                    described["state"]["last_seq"],
                    described["state"]["messages"],
                ), name
        finally:
            await nc.close()
        again = await asyncio.to_thread(_admin, target, "restore", str(tmp_path / "b"))
        assert again.returncode == 1 and "restore only into an empty server" in again.stderr
    finally:
        await asyncio.to_thread(postgres.remove_data)
        await asyncio.to_thread(nats_server.stop)
