"""Damaged cache: a truncated artifact is rebuilt, never trusted; a write that fails partway
(a full disk) publishes nothing that a later run would trust."""

from __future__ import annotations

import errno

import pytest
from pipeline_probe import ONE_MODEL_TASK_RUNS, registered_versions, task_states, tiny_config

from flows.clm import clm_flow
from lmpipe.store import arrow_stream
from lmpipe.store.keys import file_digest
from lmpipe.store.locks import LOCKS
from lmpipe.store.manifest import is_complete

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
    for stage_dir in (d for d in artifacts.iterdir() if d.name != LOCKS):
        for artifact in stage_dir.iterdir():
            assert is_complete(artifact), f"{artifact} was published half-written"
    assert registered_versions(config.registry.tracking_uri) == {}

    monkeypatch.setattr(arrow_stream, "write_split", real_write)
    states = states_of(clm_flow(config, return_state=True))
    assert states["tokenize"] == ["Cached"] and states["group"] == ["Completed"]
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
