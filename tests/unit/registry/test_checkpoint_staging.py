"""lmpipe.registry.checkpoint_staging: MLflow's staging copy of a checkpoint becomes hard links, and only there."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

from lmpipe.registry.checkpoint_staging import checkpoint_staged_by_links, link_or_copy


def checkpoint_view(tmp_path: Path) -> tuple[Path, Path]:
    """A weights file in an artifact, and a view of symlinks to it, as register hands MLflow."""
    artifact, view = tmp_path / "artifact", tmp_path / "view"
    artifact.mkdir()
    view.mkdir()
    (artifact / "model.safetensors").write_bytes(b"weights")
    (view / "model.safetensors").symlink_to(artifact / "model.safetensors")
    return artifact / "model.safetensors", view


def test_mlflow_still_stages_a_checkpoint_with_shutil_copytree():
    from mlflow.transformers import model_io

    # What the shim replaces: if MLflow stages another way, the shim does nothing and should go.
    assert "shutil.copytree(checkpoint_dir," in inspect.getsource(model_io.save_local_checkpoint)


def test_inside_the_staging_copy_links_the_files_the_view_names(tmp_path):
    from mlflow.transformers import model_io

    weights, view = checkpoint_view(tmp_path)
    with checkpoint_staged_by_links():
        model_io.shutil.copytree(view, tmp_path / "staged")
    staged = tmp_path / "staged" / "model.safetensors"
    assert not staged.is_symlink() and staged.stat().st_ino == weights.stat().st_ino
    assert model_io.shutil is shutil  # removed on the way out


def test_copies_elsewhere_are_never_links(tmp_path):
    weights, view = checkpoint_view(tmp_path)
    with checkpoint_staged_by_links():
        shutil.copytree(view, tmp_path / "copied")
    assert (tmp_path / "copied" / "model.safetensors").stat().st_ino != weights.stat().st_ino


def test_a_file_that_cannot_be_linked_is_copied(tmp_path, monkeypatch):
    def cross_device(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    weights, view = checkpoint_view(tmp_path)
    monkeypatch.setattr("os.link", cross_device)
    link_or_copy(str(view / "model.safetensors"), str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == b"weights"
    assert (tmp_path / "copy").stat().st_ino != weights.stat().st_ino


def test_overlapping_registers_keep_it_until_the_last_leaves():
    from mlflow.transformers import model_io

    with checkpoint_staged_by_links():
        with checkpoint_staged_by_links():
            pass
        assert model_io.shutil is not shutil
    assert model_io.shutil is shutil
