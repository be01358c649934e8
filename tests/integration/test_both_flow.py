"""The both-models flow end to end on a tiny config: real Prefect server, MLflow SQLite store, real models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from pipeline_probe import BOTH_MODELS_TASK_RUNS, ONE_MODEL_TASK_RUNS, registered_versions, task_states, tiny_config

from flows.both import both_flow

pytestmark = pytest.mark.integration

ALL_STAGES = ["download", "flatten", "tokenize", "group", "train-clm", "train-mlm", "evaluate", "register"]


def run(config):
    state = both_flow(config, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), task_states(state.state_details.flow_run_id, runs=BOTH_MODELS_TASK_RUNS)


def test_first_run_registers_both_models_then_reruns_are_cached_until_block_size_changes(workspace):
    config = tiny_config(workspace)
    uri = config.registry.tracking_uri

    # 1. First run: every stage runs; the second tokenize is the shared artifact (a cache hit).
    registrations, states = run(config)
    assert sorted(states) == sorted(ALL_STAGES)
    assert states["download"] == ["Completed"] and states["train-clm"] == ["Completed"]
    assert states["tokenize"] == ["Completed", "Cached"], "CLM and MLM should share one tokenized dataset"
    assert states["group"] == ["Completed", "Cached"], "CLM and MLM should share one blocks artifact"
    assert len(list((workspace / "artifacts" / "group").iterdir())) == 1
    assert registered_versions(uri) == {"eli5-clm": [1], "eli5-mlm": [1]}
    leftovers = list((workspace / "artifacts").rglob("cache-*.arrow")) + list(
        (workspace / "artifacts").rglob(".*building*")
    )
    assert leftovers == [], f"published artifacts must not be written into afterwards: {leftovers}"
    for registration_dir in registrations:
        registration = json.loads((Path(registration_dir) / "registration.json").read_text())
        assert math.isfinite(registration["perplexity"]) and registration["perplexity"] > 1
        assert registration["base_perplexity"] > registration["perplexity"]

    # 2. Same config again: every stage is Cached and no version is added.
    _, states = run(config)
    assert {name: set(s) for name, s in states.items()} == {name: {"Cached"} for name in ALL_STAGES}
    assert registered_versions(uri) == {"eli5-clm": [1], "eli5-mlm": [1]}

    # 3. A new block_size re-runs group and everything after it, but not download/flatten/tokenize.
    _, states = run(tiny_config(workspace, "data.block_size=16"))
    for stage in ("download", "flatten", "tokenize"):
        assert set(states[stage]) == {"Cached"}, stage
    assert states["group"] == ["Completed", "Cached"], "one new blocks artifact, read by both models"
    for stage in ("train-clm", "train-mlm", "evaluate", "register"):
        assert set(states[stage]) == {"Completed"}, stage
    assert registered_versions(uri) == {"eli5-clm": [1, 2], "eli5-mlm": [1, 2]}


def test_version_metadata_in_mlflow(workspace):
    from mlflow import MlflowClient

    config = tiny_config(workspace)
    state = both_flow(config, return_state=True)
    assert state.is_completed(), state.message
    client = MlflowClient(config.registry.tracking_uri)
    version = client.get_model_version("eli5-clm", "1")
    assert version.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert version.tags["data.block_size"] == "32"
    assert version.tags["data.fingerprint"]
    run = client.get_run(version.run_id)
    for metric in ("perplexity", "base_perplexity", "eval_loss", "train_loss", "train_tokens", "train_runtime_s"):
        assert math.isfinite(run.data.metrics[metric]), metric
    assert run.data.params["data.block_size"] == "32"
    assert run.data.params["train.learning_rate"] == str(config.train.learning_rate)

    # The registered model loads back as a transformers pipeline and generates text.
    import mlflow

    generator = mlflow.transformers.load_model("models:/eli5-clm/1")
    out = generator("Return the", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("Return the")


def test_deleted_artifact_directory_reruns_that_stage_only(workspace):
    config = tiny_config(workspace)
    run(config)
    group_root = workspace / "artifacts" / "group"
    (blocks,) = group_root.iterdir()  # the one blocks artifact both models read
    shutil.rmtree(blocks)

    _, states = run(config)
    # Rebuilt once by the CLM branch, then a hit for the MLM branch: never a stale hit.
    assert states["group"] == ["Completed", "Cached"], "a deleted artifact must be rebuilt, never a stale hit"
    for stage in ("download", "flatten", "tokenize", "train-clm", "train-mlm", "evaluate", "register"):
        assert set(states[stage]) == {"Cached"}, stage
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1], "eli5-mlm": [1]}

    # Register's own artifact gone: it runs again, finds the versions by their fingerprint tag,
    # and adds none.
    for objective in ("clm", "mlm"):
        shutil.rmtree(workspace / "artifacts" / f"register-{objective}")
    _, states = run(config)
    assert set(states["register"]) == {"Completed"}
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1], "eli5-mlm": [1]}


def test_each_config_section_reruns_only_the_stages_it_feeds(workspace):
    from flows.clm import clm_flow

    def states_after(*overrides: str) -> dict[str, set[str]]:
        state = clm_flow(tiny_config(workspace, *overrides), return_state=True)
        assert state.is_completed(), state.message
        return {
            name: set(s) for name, s in task_states(state.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS).items()
        }

    states_after()
    cached = {"Cached"}
    # What we see, not what is trained: nothing re-runs.
    assert set().union(*states_after("train.logging_steps=2").values()) == cached
    # A training knob: train, evaluate and register re-run; the data stages do not.
    after_train = states_after("train.learning_rate=0.002")
    assert after_train["tokenize"] == cached and after_train["group"] == cached
    assert after_train["train-clm"] == after_train["evaluate"] == after_train["register"] == {"Completed"}
    # An evaluation knob: evaluate and register only.
    after_eval = states_after("train.learning_rate=0.002", "eval.max_blocks=16")
    assert after_eval["train-clm"] == cached
    assert after_eval["evaluate"] == after_eval["register"] == {"Completed"}
    # The model card's samples are made by evaluate: a card setting re-runs it (and register), not training.
    after_card = states_after("train.learning_rate=0.002", "eval.max_blocks=16", "card.max_new_tokens=8")
    assert after_card["train-clm"] == cached
    assert after_card["evaluate"] == after_card["register"] == {"Completed"}


def test_curves_review_table_and_predict_from_the_registry(workspace, capsys):
    from mlflow import MlflowClient
    from transformers import pipeline

    from lmpipe.cli.main import main
    from lmpipe.store.keys import artifact_path
    from lmpipe.store.manifest import read_manifest

    config = tiny_config(workspace)
    registrations, _ = run(config)
    uri = config.registry.tracking_uri
    client = MlflowClient(uri)

    # Curves: one point per logging step (tiny.yaml: 8 steps, logging every 4).
    version = client.get_model_version("eli5-clm", "1")
    curve = client.get_metric_history(version.run_id, "train/loss")
    assert [point.step for point in curve] == [4, 8]
    assert len(client.get_metric_history(version.run_id, "train/learning_rate")) == 2

    # The review table: both models, newest first, with their perplexity.
    assert main(["models", "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert "eli5-clm" in table and "eli5-mlm" in table and version.tags["perplexity"] in table
    assert "bits/byte" in table and version.tags["bits_per_byte"] in table  # the causal LM's, across tokenizers

    # predict through the registry equals the trained model loaded on its own.
    trained = {
        json.loads((Path(d) / "registration.json").read_text())["objective"]: str(
            artifact_path(config.artifacts.root, read_manifest(d)["inputs"]["model"])
        )
        for d in registrations
    }
    sentence = "Return the <mask> of the file."
    assert main(["predict", "eli5-mlm", sentence, "--version", "1", "--tracking-uri", uri]) == 0
    printed = [line.split("token: ")[1].split("  score:")[0] for line in capsys.readouterr().out.splitlines()]
    expected = [p["token_str"] for p in pipeline("fill-mask", model=trained["mlm"])(sentence, top_k=3)]
    assert printed == expected and len(printed) == 3

    assert (
        main(["predict", "eli5-clm", "Return the", "--version", "1", "--max-new-tokens", "8", "--tracking-uri", uri])
        == 0
    )
    generated = capsys.readouterr().out.strip().removeprefix("generated_text: ")
    reference = pipeline("text-generation", model=trained["clm"])(
        "Return the", max_new_tokens=8, do_sample=False, add_special_tokens=False
    )
    assert generated == reference[0]["generated_text"]
