"""lmpipe.training.checkpoints: a checkpoint is trusted only when its manifest, written last, matches its files."""

from __future__ import annotations

import ast
from pathlib import Path

from lmpipe.training.checkpoints import latest_complete, rotate, verify, write_manifest


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


# ---------------------------------------------------------------------------- what resuming unpickles


def _torch_load_calls(source: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def _weights_only(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def test_resuming_unpickles_nothing_but_tensors(repo_root):
    """Our code never calls torch.load; the installed Trainer, which reads our checkpoints on resume,
    passes weights_only=True at every call (a transformers upgrade that dropped it would fail here)."""
    import transformers.trainer

    ours = [
        f"{path.relative_to(repo_root)}:{call.lineno}"
        for folder in ("lmpipe", "tasks", "flows")
        for path in sorted((repo_root / folder).rglob("*.py"))
        for call in _torch_load_calls(path.read_text())
    ]
    assert ours == [], f"torch.load in our code: {ours}"
    trainer_calls = _torch_load_calls(Path(transformers.trainer.__file__).read_text())
    assert trainer_calls, "the Trainer loads checkpoint state with torch.load"
    unsafe = [call.lineno for call in trainer_calls if not _weights_only(call)]
    assert unsafe == [], f"transformers/trainer.py calls torch.load without weights_only=True at lines {unsafe}"


def test_checkpoints_live_under_the_artifact_root_keyed_by_the_global_batch_not_its_split(tmp_path):
    from lmpipe.config.loading import load_config
    from tasks.train import checkpoint_dir, train_output_dir

    def config(*overrides: str):
        # fp32: what a Ray worker trains in is known here only when set (`auto` resolves on the worker).
        return load_config(None, [f"artifacts.root={tmp_path / 'artifacts'}", "train.precision=fp32", *overrides])

    where = checkpoint_dir("blocks/1", "tokenize/2", config("train.batch_size=8"), "clm")
    assert where.resolve().is_relative_to((tmp_path / "artifacts").resolve())
    assert where == checkpoint_dir("blocks/1", "tokenize/2", config("train.batch_size=8"), "clm"), "a re-run finds it"
    # 1 rank x 8 blocks, 2 ranks x 4, 1 rank x 4 x 2 accumulated: one trajectory, so one place to resume from,
    # though each is an artifact of its own (the reduction order differs).
    for split in (
        ("train.processes=2", "train.batch_size=4"),
        ("train.batch_size=4", "train.grad_accum=2"),
        ("train.launcher=ray", "train.ray_workers=4", "train.batch_size=2"),
    ):
        assert checkpoint_dir("blocks/1", "tokenize/2", config(*split), "clm") == where, split
        artifact = train_output_dir("blocks/1", "tokenize/2", config(*split), "clm")
        assert artifact != train_output_dir("blocks/1", "tokenize/2", config("train.batch_size=8"), "clm"), split
    for other in (("train.batch_size=4",), ("train.processes=2",), ("train.seed=7",)):
        assert checkpoint_dir("blocks/1", "tokenize/2", config(*other), "clm") != where, other
    assert checkpoint_dir("blocks/1", "tokenize/2", config("train.batch_size=8"), "mlm") != where
