"""docs/architecture.md is the design a newcomer reads: it names every table's owner and every
request/reply operation, and nothing in the repository points to a design file outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from runloom.contracts.operations import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_every_table_has_its_owner_in_the_doc() -> None:
    tables = {
        name
        for sql in ROOT.glob("services/*/src/runloom/*/migrations/*.sql")
        for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql.read_text())
    }
    assert len(tables) > 10
    missing = sorted(t for t in tables if f"`{t}`" not in DOC)
    assert not missing, f"docs/architecture.md does not say who owns {missing}"


def test_every_request_reply_subject_is_in_the_doc() -> None:
    for op in OPERATIONS:
        group, _, verb = op.subject.partition(".")
        assert f"`{op.subject}`" in DOC or f"`.{verb}`" in DOC, op.subject


def test_nothing_points_to_a_design_file_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"DESIGN\.md|INTERFACES\.md|\.\./shared/")
    found = []
    for name in files:
        path = ROOT / name
        if name.startswith("libs/contracts/generated") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if outside.search(text) and name != "tests/foundation/test_architecture_doc.py":
            found.append(name)
    assert not found, f"these point outside the repository: {found}"
