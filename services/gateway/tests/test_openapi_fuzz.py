"""schemathesis against a real gateway: every operation of the OpenAPI document, fuzzed with
a fixed seed, a fixed number of examples and a time budget. Any 5xx, undeclared status or
media type, response not matching its schema, or 405 without `Allow` fails the build."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.platform_services(
    "gateway", "billing", "orchestrator", "webhooks"
)  # every route

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
        "missing_required_header",
        "negative_data_rejection",
    ]
)
# Refusing a body over the route's size limit (413) is a rejection too: the AG-UI input's
# `messages` may hold 1,000 items by its schema, more than fit in the 64 KB the route takes.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429"]
"""
MAX_EXAMPLES = 20
SEED = os.environ.get("RUNLOOM_FUZZ_SEED", "20261127")  # another seed explores other inputs
MAX_TIME_S = 50


@pytest.mark.timeout(300)
async def test_the_api_keeps_the_promises_of_its_openapi_document(platform, tmp_path: Path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency: run `make setup`"
    report = tmp_path / "report.json"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        st,
        "--config-file",
        str(config),
        "run",
        f"{platform.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {platform.api_key}",
        "--checks",
        CHECKS,
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(MAX_TIME_S),
        "--seed",
        SEED,
        "--workers",
        "1",  # threads race in CPython 3.11's ast.parse (hypothesis describing a filter)
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--generation-database",
        "none",
        "--no-color",
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), MAX_TIME_S + 150)
    took = time.monotonic() - started
    text = out.decode(errors="replace")
    print(text[-6000:])
    print(f"schemathesis took {took:.1f} s")
    if report.exists():
        print(json.dumps(json.loads(report.read_text())).replace(platform.api_key, "***")[:3000])
    assert report.exists(), text[-6000:]
    failures = json.loads(report.read_text()).get("failures", [])
    assert not failures, (failures, text[-6000:])
    assert proc.returncode == 0, text[-6000:]
    assert await _ready(platform.url), "the gateway is not ready after the run"


async def _ready(url: str) -> bool:
    import httpx

    async with httpx.AsyncClient() as c:
        return (await c.get(f"{url}/readyz")).status_code == 200
