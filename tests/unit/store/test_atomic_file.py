"""lmpipe.store.atomic_file: a file is replaced whole, and a failed write leaves the old one and no scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmpipe.store.atomic_file import write_atomically


def test_a_new_file_and_its_folders_are_made_and_an_old_one_is_replaced(tmp_path):
    target = tmp_path / "records" / "deep" / "record.json"
    write_atomically(target, b"first")
    write_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]  # no scratch left


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_scratch(tmp_path, monkeypatch):
    target = tmp_path / "memo.json"
    write_atomically(target, b"old")

    def disk_full(self: Path, content: bytes) -> int:
        Path.write_text(self, "half")  # what a full disk leaves: part of it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["memo.json"]
