"""lmpipe.checkpoints: a checkpoint is trusted only when its manifest, written last, matches its files."""

from __future__ import annotations

from pathlib import Path

from lmpipe.checkpoints import latest_complete, rotate, verify, write_manifest


def checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * 100)
    (path / "optimizer.pt").write_bytes(b"o" * 50)
    if complete:
        write_manifest(path)
    return path


def test_a_complete_checkpoint_verifies(tmp_path):
    assert verify(checkpoint(tmp_path, 5)) is None


def test_truncated_changed_missing_and_unfinished_checkpoints_are_named(tmp_path):
    truncated = checkpoint(tmp_path, 1)
    (truncated / "optimizer.pt").write_bytes(b"o" * 10)
    assert verify(truncated) == "optimizer.pt has 10 bytes, expected 50"
    flipped = checkpoint(tmp_path, 2)
    (flipped / "model.safetensors").write_bytes(b"x" * 100)
    assert verify(flipped) == "model.safetensors does not match its checksum"
    missing = checkpoint(tmp_path, 3)
    (missing / "optimizer.pt").unlink()
    assert verify(missing) == "optimizer.pt is missing"
    assert verify(checkpoint(tmp_path, 4, complete=False)) == "no manifest (written partially?)"


def test_resume_takes_the_newest_good_checkpoint_and_reports_each_bad_one(tmp_path):
    checkpoint(tmp_path, 5)
    good = checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 15, complete=False)
    corrupt = checkpoint(tmp_path, 20)
    (corrupt / "model.safetensors").write_bytes(b"short")
    (tmp_path / ".staging").mkdir()  # a save killed midway is never a candidate
    warnings: list[str] = []
    assert latest_complete(tmp_path, warnings.append) == good
    assert warnings == [
        "skipping checkpoint checkpoint-20: model.safetensors has 5 bytes, expected 100",
        "skipping checkpoint checkpoint-15: no manifest (written partially?)",
    ]


def test_no_directory_or_no_checkpoint_means_a_fresh_start(tmp_path):
    assert latest_complete(tmp_path / "absent") is None
    assert latest_complete(tmp_path) is None


def test_rotation_keeps_the_newest_complete_ones_by_step_not_by_name(tmp_path):
    for step in (5, 10, 100, 15):
        checkpoint(tmp_path, step)
    rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-100", "checkpoint-15"]
