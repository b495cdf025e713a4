"""Rotating one identity's credential: a new seed, the server's configuration reloaded (SIGHUP),
the other identities' connections untouched, the old seed refused from then on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from runloom.devkit import busauth
from runloom.devkit.embedded import NatsServer, free_port
from runloom.runtime import bus


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_rotated_credential_takes_effect_on_reload_without_dropping_others(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    server = NatsServer(tmp_path / "nats", free_port(), authorization=busauth.prepare(home))
    server.start()
    clients = []
    try:
        # The gateway's seed before rotation, kept as a workload still holding it would.
        old_seed = tmp_path / "old" / "gateway.nk"
        old_seed.parent.mkdir()
        old_seed.write_bytes(busauth.credential(home, "gateway").read_bytes())
        old_seed.chmod(0o600)

        async def connect(identity: str, seed: Path | None = None, **kw: Any) -> Any:
            cred = seed or busauth.credential(home, identity)
            nc = await bus.connect(server.url, f"rot-{identity}", credentials=cred, **kw)
            clients.append(nc)
            return nc

        orchestrator = await connect("orchestrator")
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        old = await connect("gateway", old_seed, allow_reconnect=False, closed_cb=on_closed)
        got: list[bytes] = []

        async def on_event(msg: Any) -> None:
            got.append(msg.data)

        await orchestrator.subscribe("run.*.events", cb=on_event)

        busauth.credential(home, "gateway").unlink()  # rotate: a new seed, a new public key
        server.authorization = busauth.prepare(home)
        server.reload()

        # The old key's connection is closed by the server, and the old key no longer gets in.
        try:
            await asyncio.wait_for(closed.wait(), timeout=10)
        except TimeoutError:
            raise AssertionError(
                f"old key still connected ({old.is_connected}):\n{server.log_file.read_text()}"
            ) from None
        with pytest.raises(Exception, match=r"(?i)authorization"):
            async with asyncio.timeout(10):
                await nats.connect(
                    server.url,
                    nkeys_seed=str(old_seed),
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                )
        # The new seed works at once; the orchestrator never lost its connection.
        gateway_new = await connect("gateway")
        await gateway_new.publish("run.r1.events", b"after rotation")
        await _until(lambda: got == [b"after rotation"], 5, f"orchestrator saw {got}")
        assert orchestrator.is_connected and orchestrator.stats["reconnects"] == 0
    finally:
        for nc in clients:
            if not nc.is_closed:
                await nc.close()
        server.stop()
