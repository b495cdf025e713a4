"""The README documents every setting and every make target a newcomer uses."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from runloom.runtime import config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    source = Path(config.__file__).read_text()
    names = re.findall(r'_env\(\s*"(RUNLOOM_[A-Z0-9_]+)"', source)
    assert len(names) == len(fields(config.Settings)), "every Settings field reads one variable"
    rows = {m for m in re.findall(r"^\| `(RUNLOOM_[A-Z0-9_]+)` \|", README, flags=re.M)}
    missing = sorted(set(names) - rows)
    assert not missing, f"README configuration table lacks {missing}"


def test_every_make_target_is_documented() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z0-9-]+):.*## ", makefile, flags=re.M)
    assert {"setup", "run", "test", "lint", "contracts", "contracts-check", "bench"} <= set(targets)
    for target in targets:
        if target != "help":
            assert target in README, f"make {target} is not mentioned in the README"
