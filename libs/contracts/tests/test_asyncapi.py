"""The AsyncAPI document is valid for the official parser (@asyncapi/parser, on Node)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runloom.contracts import codegen


def test_official_parser_accepts_the_document(node_tools: Any) -> None:
    done = node_tools.run("check-asyncapi.mjs", str(codegen.GENERATED / "asyncapi.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads((codegen.GENERATED / "asyncapi.json").read_text())
    assert f"VALID: {len(doc['channels'])} channels" in done.stdout


def test_official_parser_rejects_a_broken_document(node_tools: Any, tmp_path: Path) -> None:
    doc = codegen.asyncapi()
    doc["operations"]["sendStartRun"]["channel"] = {"$ref": "#/channels/noSuchChannel"}
    del doc["components"]["schemas"]["RunCreated"]
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(doc))
    done = node_tools.run("check-asyncapi.mjs", str(broken))
    assert done.returncode == 1, done.stdout
    assert "INVALID" in done.stdout
    assert "noSuchChannel" in done.stdout
