"""lmpipe.registry.large_upload: multipart upload switched on for a model file over 5 GiB, and only then.

The big files are sparse: truncate() sets their size without writing a byte to disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from lmpipe.registry.large_upload import (
    CHUNK_SIZE,
    MAX_PARTS,
    MULTIPART_THRESHOLD_BYTES,
    PROXY_MULTIPART,
    largest_file,
    multipart_environment,
    multipart_upload_if_needed,
)

GiB = 1024**3


def model_dir_with(tmp_path: Path, weights_bytes: int) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with open(model / "model.safetensors", "wb") as weights:
        weights.truncate(weights_bytes)  # sparse
    return model


@pytest.fixture
def clean_environ(monkeypatch):
    for name in (PROXY_MULTIPART, CHUNK_SIZE):
        monkeypatch.delenv(name, raising=False)


def test_a_file_over_the_threshold_switches_proxy_multipart_upload_on(tmp_path):
    model = model_dir_with(tmp_path, 6 * GiB)
    assert multipart_environment(model, {}) == {PROXY_MULTIPART: "true"}  # 10 MiB parts still fit: chunk size kept


def test_files_at_or_under_the_threshold_need_nothing(tmp_path):
    assert multipart_environment(model_dir_with(tmp_path, MULTIPART_THRESHOLD_BYTES), {}) == {}
    assert multipart_environment(tmp_path / "model", {"UNRELATED": "1"}) == {}
    (tmp_path / "empty").mkdir()
    assert multipart_environment(tmp_path / "empty", {}) == {}


@pytest.mark.parametrize("explicit", ["false", "true", "0"])
def test_the_users_own_setting_is_kept(tmp_path, explicit):
    assert multipart_environment(model_dir_with(tmp_path, 6 * GiB), {PROXY_MULTIPART: explicit}) == {}


def test_a_file_too_big_for_ten_thousand_default_parts_gets_bigger_parts(tmp_path):
    model = model_dir_with(tmp_path, 120 * GiB)
    updates = multipart_environment(model, {})
    chunk = int(updates[CHUNK_SIZE])
    assert chunk * MAX_PARTS >= 120 * GiB and chunk % 1024**2 == 0
    assert CHUNK_SIZE not in multipart_environment(model, {CHUNK_SIZE: str(64 * 1024**2)})  # the user's choice


def test_files_behind_symlinks_count_as_mlflow_copies_them(tmp_path):
    # log_training_run hands MLflow a view of symlinks to the checkpoint's files (model_files_view).
    model = model_dir_with(tmp_path, 6 * GiB)
    view = tmp_path / "view"
    view.mkdir()
    (view / "model.safetensors").symlink_to(model / "model.safetensors")
    (view / "linked-folder").symlink_to(model)
    assert largest_file(view)[1] == 6 * GiB
    assert multipart_environment(view, {}) == {PROXY_MULTIPART: "true"}


def test_the_environment_is_set_for_the_upload_only_and_restored(tmp_path, clean_environ, caplog):
    model = model_dir_with(tmp_path, 6 * GiB)
    with caplog.at_level(logging.INFO), multipart_upload_if_needed(model, logging.getLogger("test")):
        assert os.environ[PROXY_MULTIPART] == "true"
    assert PROXY_MULTIPART not in os.environ
    (line,) = caplog.messages
    assert "model.safetensors is 6.0 GiB" in line and f"{PROXY_MULTIPART}=true" in line


def test_the_environment_is_restored_when_the_upload_fails(tmp_path, clean_environ, monkeypatch):
    monkeypatch.setenv(CHUNK_SIZE, str(32 * 1024**2))
    model = model_dir_with(tmp_path, 120 * GiB)
    with pytest.raises(RuntimeError), multipart_upload_if_needed(model, logging.getLogger("test")):
        assert os.environ[CHUNK_SIZE] == str(32 * 1024**2)  # the user's, untouched
        raise RuntimeError("upload failed")
    assert PROXY_MULTIPART not in os.environ and os.environ[CHUNK_SIZE] == str(32 * 1024**2)


def test_a_small_model_leaves_the_environment_and_the_log_alone(tmp_path, clean_environ, caplog):
    before = dict(os.environ)
    with caplog.at_level(logging.INFO), multipart_upload_if_needed(model_dir_with(tmp_path, 1024), logging.getLogger()):
        assert dict(os.environ) == before
    assert dict(os.environ) == before and not caplog.messages


def test_a_users_false_is_respected_inside_the_upload(tmp_path, clean_environ, monkeypatch):
    monkeypatch.setenv(PROXY_MULTIPART, "false")
    with multipart_upload_if_needed(model_dir_with(tmp_path, 6 * GiB), logging.getLogger("test")):
        assert os.environ[PROXY_MULTIPART] == "false"
    assert os.environ[PROXY_MULTIPART] == "false"
