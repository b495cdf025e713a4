"""A backup folder is only restored when every file matches its manifest; a restore is refused
for a damaged or incomplete one, and pruning keeps the newest complete backups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runloom.runtime import backup


def _fake(root: Path, name: str = "b") -> Path:
    folder = root / name
    (folder / "streams").mkdir(parents=True)
    (folder / "postgres.dump").write_bytes(b"dump")
    (folder / "streams" / "RUN_EVENTS.tar.s2").write_bytes(b"events")
    files = [folder / "postgres.dump", folder / "streams" / "RUN_EVENTS.tar.s2"]
    manifest = {"format": backup.FORMAT, "files": [backup._file_entry(folder, f) for f in files]}
    (folder / backup.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_backup_that_matches_its_manifest_verifies(tmp_path: Path) -> None:
    folder = _fake(tmp_path)
    assert len(backup.verify(folder)["files"]) == 2


def test_a_changed_file_is_refused_by_name(tmp_path: Path) -> None:
    folder = _fake(tmp_path)
    (folder / "streams" / "RUN_EVENTS.tar.s2").write_bytes(b"eventz")
    with pytest.raises(
        backup.BackupError, match=r"RUN_EVENTS\.tar\.s2 does not match its checksum"
    ):
        backup.verify(folder)


def test_a_missing_file_or_manifest_is_refused(tmp_path: Path) -> None:
    folder = _fake(tmp_path)
    (folder / "postgres.dump").unlink()
    with pytest.raises(backup.BackupError, match=r"postgres\.dump is missing"):
        backup.verify(folder)
    with pytest.raises(backup.BackupError, match="not a Runloom backup"):
        backup.verify(tmp_path)


def test_pruning_keeps_the_newest_complete_backups(tmp_path: Path) -> None:
    for name in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        _fake(tmp_path, name)
    (tmp_path / "20260104T000000Z").mkdir()  # a backup still being written (no manifest)
    removed = backup.prune(tmp_path, 2)
    assert [p.name for p in removed] == ["20260101T000000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "20260102T000000Z",
        "20260103T000000Z",
        "20260104T000000Z",
    ]
