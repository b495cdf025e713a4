"""Node tools for the contract tests: the npm packages pinned in `node/package-lock.json`,
installed once into `.cache/node/contracts` by the dev kit (no system Node)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runloom.devkit.node import NodeTools, install


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    return install(Path(__file__).parent / "node", "contracts")
