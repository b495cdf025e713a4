"""schemathesis against a real gateway: every operation of the OpenAPI document, fuzzed with
a fixed seed, a fixed number of examples and a time budget. Any 5xx, undeclared status or
media type, response not matching its schema, or 405 without `Allow` fails the build."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.platform_services("gateway", "billing", "orchestrator")  # every route

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
MAX_EXAMPLES = 20
MAX_TIME_S = 50


@pytest.mark.timeout(300)
async def test_the_api_keeps_the_promises_of_its_openapi_document(platform, tmp_path: Path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency: run `make setup`"
    report = tmp_path / "report.json"
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        st,
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
        "20261127",
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
    # Known and open: POST /v1/agui accepts some RunAgentInput bodies its declared schema
    # refuses (ST201, e.g. message parts the lenient AG-UI model lets through). Every other
    # finding, and any finding of another kind on that route, fails the build.
    unexpected = [
        f for f in failures if not (f["code"] == "ST201" and f["operations"] == ["POST /v1/agui"])
    ]
    assert not unexpected, (unexpected, text[-6000:])
    assert proc.returncode == 0 or failures, text[-6000:]
    assert await _ready(platform.url), "the gateway is not ready after the run"


async def _ready(url: str) -> bool:
    import httpx

    async with httpx.AsyncClient() as c:
        return (await c.get(f"{url}/readyz")).status_code == 200
