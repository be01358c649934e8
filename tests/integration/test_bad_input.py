"""Failures found while running a flow: each is one clear line, registers nothing, leaves nothing half-written.

The table of bad inputs driven through the command line is test_bad_input_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_probe import ONE_MODEL_TASK_RUNS, registered_versions, task_states, tiny_config

from flows.clm import clm_flow
from lmpipe.errors import PipelineInputError

pytestmark = pytest.mark.integration


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def assert_nothing_left_behind(workspace: Path, config) -> None:
    assert registered_versions(config.registry.tracking_uri) == {}, "a failed run must register nothing"
    scratch = list((workspace / "artifacts").rglob("*.building-*"))
    assert scratch == [], f"half-written artifacts left behind: {scratch}"


def test_changed_local_file_contents_rerun_everything(workspace):
    rows = [
        {"q_id": str(i), "answers": {"text": [f"answer number {i} says the sky is blue and water is wet"] * 3}}
        for i in range(40)
    ]
    data = write_jsonl(workspace / "eli5.jsonl", rows)
    config = tiny_config(workspace, "data.source=local", f"data.path={data}")

    first = clm_flow(config, return_state=True)
    assert first.is_completed(), first.message
    again = clm_flow(config, return_state=True)
    assert set(sum(task_states(again.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS).values(), [])) == {"Cached"}

    write_jsonl(
        data,
        [{**row, "answers": {"text": [t.replace("blue", "grey") for t in row["answers"]["text"]]}} for row in rows],
    )  # same path, new contents
    changed = clm_flow(config, return_state=True)
    assert changed.is_completed(), changed.message
    states = task_states(changed.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS)
    assert {name: set(s) for name, s in states.items()} == {name: {"Completed"} for name in states}
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1, 2]}


def test_a_diverging_loss_stops_training_with_a_clear_error(workspace):
    # A huge learning rate with no warm-up: the loss goes NaN/inf within a few steps.
    config = tiny_config(
        workspace,
        "train.learning_rate=1e6",
        "train.warmup_ratio=0",
        "train.max_steps=200",
        "train.logging_steps=2",
        "train.checkpoint_steps=null",
    )
    state = clm_flow(config, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PipelineInputError), error
    message = str(error)
    assert message.startswith("training diverged: loss is ") and "lower train.learning_rate=1e+06?" in message, message
    step = int(message.split(" at step ")[1].split(";")[0])
    assert step < 200, "the guard must stop training long before max_steps"
    # download, flatten, tokenize, group, train: nothing after the failed training starts
    states = task_states(state.state_details.flow_run_id, runs=5)
    assert states["train-clm"] == ["Failed"], "a diverged run is not retried"
    assert "evaluate" not in states and "register" not in states
    assert_nothing_left_behind(workspace, config)


def test_a_model_worse_than_its_base_is_not_registered(workspace):
    # Any real training of the tiny model beats its base, but not by half: a factor of 0.5 blocks it.
    config = tiny_config(workspace, "eval.max_ratio_to_base=0.5")
    state = clm_flow(config, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PipelineInputError)
    assert "is worse than the base model's" in str(error) and "eval.max_ratio_to_base=0.5" in str(error)
    assert "\n" not in str(error)
    assert_nothing_left_behind(workspace, config)

    # Evaluate failed after training succeeded: the re-run reuses the trained model, trains nothing.
    again = clm_flow(tiny_config(workspace), return_state=True)
    assert again.is_completed(), again.message
    states = task_states(again.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS)
    assert states["train-clm"] == ["Cached"] and states["evaluate"] == ["Completed"], states
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}


def test_a_run_whose_paths_leave_the_workers_roots_is_rejected(workspace, monkeypatch):
    write_jsonl(workspace / "outside.jsonl", [{"text": "some words here"}] * 20)
    (workspace / "data").mkdir()
    config = tiny_config(workspace, "data.source=local", f"data.path={workspace / 'data' / '..' / 'outside.jsonl'}")
    monkeypatch.setenv("LMPIPE_DATA_ROOT", str(workspace / "data"))  # the worker's environment, not a parameter
    state = clm_flow(config, return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert message.startswith("invalid config: data.path: ") and "is outside the allowed data root" in message
    assert "\n" not in message
    assert not (workspace / "artifacts").exists(), "rejected before any task ran"
    assert_nothing_left_behind(workspace, config)
