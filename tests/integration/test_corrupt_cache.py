"""Damaged cache: a truncated or overwritten artifact is rebuilt, never trusted; bytes that change with size
and time kept are caught where a stage reads them, before a model sees them; a write that fails partway
(a full disk) publishes nothing that a later run would trust."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from pipeline_probe import ONE_MODEL_TASK_RUNS, registered_versions, task_states, tiny_config

from flows.clm import clm_flow
from lmpipe.store import arrow_stream
from lmpipe.store.keys import file_digest
from lmpipe.store.manifest import is_complete, verify

pytestmark = pytest.mark.integration


def states_of(state) -> dict[str, list[str]]:
    assert state.is_completed(), state.message
    return task_states(state.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS)


def test_a_truncated_artifact_is_rebuilt_and_nothing_downstream_is_redone(workspace):
    config = tiny_config(workspace)
    states_of(clm_flow(config, return_state=True))
    (group_dir,) = (workspace / "artifacts" / "group").iterdir()
    (arrow,) = (group_dir / "dataset" / "train").glob("*.arrow")
    original = file_digest(arrow)
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # truncated, e.g. by a crash or a full disk

    states = states_of(clm_flow(config, return_state=True))
    assert states["group"] == ["Completed"], "a truncated artifact must be rebuilt, not served from cache"
    assert states["train-clm"] == ["Cached"], "the rebuilt blocks are the same, so training is not redone"
    assert file_digest(arrow) == original and is_complete(group_dir)
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}


def flip_a_byte(path: Path, keep_time: bool) -> None:
    """One byte of `path` changed in place, its size kept (and, with keep_time, its modification time)."""
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    if keep_time:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_bytes_overwritten_in_place_with_the_size_kept_are_rebuilt_before_training(workspace, caplog):
    config = tiny_config(workspace)
    states_of(clm_flow(config, return_state=True))
    (group_dir,) = (workspace / "artifacts" / "group").iterdir()
    (arrow,) = (group_dir / "dataset" / "train").glob("*.arrow")
    original = file_digest(arrow)
    flip_a_byte(arrow, keep_time=False)  # e.g. a tool writing into the artifact: the time moves

    with caplog.at_level(logging.WARNING):
        states = states_of(clm_flow(config, return_state=True))
    assert states["group"] == ["Completed"], "bytes changed in place must be rebuilt, not served from cache"
    assert states["train-clm"] == ["Cached"], "the rebuilt blocks are the same, so training is not redone"
    assert file_digest(arrow) == original
    assert any(
        f"artifact {group_dir} is not usable" in r.getMessage() and "does not match its checksum" in r.getMessage()
        for r in caplog.records
    ), "the log says which artifact was rebuilt and why"


def test_bytes_changed_with_size_and_time_kept_are_caught_by_the_stage_reading_them(workspace, caplog):
    """The lookup reads no data, so it cannot see this; the first stage that reads the artifact does, before it
    publishes anything, and withdraws it. No model is trained on it; the next run rebuilds it."""
    config = tiny_config(workspace)
    states_of(clm_flow(config, return_state=True))
    (tokenize_dir,) = (workspace / "artifacts" / "tokenize").iterdir()
    (arrow,) = (tokenize_dir / "dataset" / "train").glob("*.arrow")
    flip_a_byte(arrow, keep_time=True)

    other_blocks = config.model_copy(update={"data": config.data.model_copy(update={"block_size": 24})})
    failed = clm_flow(other_blocks, return_state=True)  # group must read the tokenized ids again
    assert failed.is_failed()
    assert f"artifact tokenize/{tokenize_dir.name} is corrupt" in failed.message, failed.message
    assert not is_complete(tokenize_dir), "withdrawn, so no later lookup trusts it"
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}, "nothing trained on it registered"

    with caplog.at_level(logging.WARNING):
        states = states_of(clm_flow(other_blocks, return_state=True))
    assert states["tokenize"] == ["Completed"] and states["group"] == ["Completed"]
    assert any(f"artifact {tokenize_dir} is not usable (no manifest)" in r.getMessage() for r in caplog.records)
    assert verify(tokenize_dir) is None


def test_blocks_changed_with_size_and_time_kept_never_reach_training(workspace):
    config = tiny_config(workspace)
    states_of(clm_flow(config, return_state=True))
    (group_dir,) = (workspace / "artifacts" / "group").iterdir()
    (arrow,) = (group_dir / "dataset" / "train").glob("*.arrow")
    flip_a_byte(arrow, keep_time=True)

    retrained = config.model_copy(update={"train": config.train.model_copy(update={"seed": 7})})
    failed = clm_flow(retrained, return_state=True)  # training reads the blocks: it checks them first
    assert failed.is_failed() and f"artifact group/{group_dir.name} is corrupt" in failed.message, failed.message
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
    states = states_of(clm_flow(retrained, return_state=True))
    assert states["group"] == ["Completed"] and states["train-clm"] == ["Completed"]
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1, 2]}


def test_a_write_failing_partway_leaves_nothing_a_later_run_trusts(workspace, monkeypatch):
    config = tiny_config(workspace)
    real_write = arrow_stream.write_split

    def disk_full_halfway(tables, features, split, split_dir):
        if "/group/" not in str(split_dir):  # the earlier stages write normally
            return real_write(tables, features, split, split_dir)

        def first_batch_then_full():  # a real, partly written Arrow file, then the disk is full
            yield next(iter(tables))
            raise OSError(errno.ENOSPC, "No space left on device")

        return real_write(first_batch_then_full(), features, split, split_dir)

    monkeypatch.setattr(arrow_stream, "write_split", disk_full_halfway)
    failed = clm_flow(config, return_state=True)
    assert failed.is_failed() and "No space left on device" in failed.message
    artifacts = workspace / "artifacts"
    assert [p for p in artifacts.rglob("*") if ".building-" in p.name] == [], "scratch directories are removed"
    assert not (artifacts / "group").exists() or not any((artifacts / "group").iterdir())
    for stage_dir in (d for d in artifacts.iterdir() if not d.name.startswith(".")):  # not .locks, .digests
        for artifact in stage_dir.iterdir():
            assert is_complete(artifact), f"{artifact} was published half-written"
    assert registered_versions(config.registry.tracking_uri) == {}

    monkeypatch.setattr(arrow_stream, "write_split", real_write)
    states = states_of(clm_flow(config, return_state=True))
    assert states["tokenize"] == ["Cached"] and states["group"] == ["Completed"]
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
