"""The logged model carries its scores on the evaluation set, and the run its training's system metrics,
as a real MLflow server (SQLite backend, loopback) returns them: two versions, ranked by perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from pipeline_probe import tiny_config

from flows.clm import clm_flow
from lmpipe.registry.register import ARTIFACTS_TAG
from lmpipe.store.keys import artifact_path

pytestmark = pytest.mark.integration


def test_logged_models_carry_their_scores_on_the_evaluation_set_and_rank_by_perplexity(workspace, mlflow_server):
    registrations = []
    for steps in (2, 16):  # two training lengths: two models, two versions, two perplexities
        config = tiny_config(workspace, f"registry.tracking_uri={mlflow_server}", f"train.max_steps={steps}")
        state = clm_flow(config, return_state=True)
        assert state.is_completed(), state.message
        (registration_dir,) = state.result()
        registrations.append(json.loads((Path(registration_dir) / "registration.json").read_text()))

    client = MlflowClient(mlflow_server)
    versions = {int(v.version): v for v in client.search_model_versions("name = 'eli5-clm'")}
    assert sorted(versions) == [1, 2]
    for registration in registrations:
        version = versions[registration["version"]]
        run = client.get_run(version.run_id)
        model = client.get_logged_model(logged_model_id(version))
        assert model.source_run_id == run.info.run_id
        assert {"name": "eli5-clm", "version": version.version} in json.loads(model.tags["mlflow.modelVersions"])

        # The evaluation set is the run's test-blocks input; every score on the model names it.
        (evaluation_input,) = [i for i in run.inputs.dataset_inputs if i.dataset.name == "test-blocks"]
        assert len(run.inputs.dataset_inputs) == 2 and not run.inputs.model_inputs  # nothing added by the scores
        scores = {metric.key: metric for metric in model.metrics if metric.dataset_name is not None}
        expected = {"perplexity", "base_perplexity", "eval_loss"}
        _, eval_ref = json.loads(version.tags[ARTIFACTS_TAG])
        evaluated = json.loads((artifact_path(config.artifacts.root, eval_ref) / "metrics.json").read_text())
        if evaluated.get("bits_per_byte") is not None:  # evaluate measures it for the causal LM
            expected |= {"bits_per_byte", "base_bits_per_byte"}
        assert set(scores) == expected
        for metric in scores.values():
            assert (metric.dataset_name, metric.dataset_digest) == (
                evaluation_input.dataset.name,
                evaluation_input.dataset.digest,
            )
        assert scores["perplexity"].value == pytest.approx(float(version.tags["perplexity"]), abs=1e-4)
        assert "eval/loss" not in {metric.key for metric in model.metrics}  # the curve stays on the run
        # The run keeps its own metrics, each point once, and the training's system metrics beside them.
        assert run.data.metrics["perplexity"] == scores["perplexity"].value
        assert len(client.get_metric_history(run.info.run_id, "perplexity")) == 1
        assert run.data.metrics["system/peak_host_memory_mb"] > 0
        assert "system/gpu_peak_memory_mb" not in run.data.metrics  # a CPU run

    mlflow.set_tracking_uri(mlflow_server)
    ranked = mlflow.search_logged_models(
        experiment_ids=[registrations[0]["experiment_id"]],
        order_by=[{"field_name": "metrics.perplexity", "ascending": True}],
        output_format="list",
    )
    by_tag = sorted(versions.values(), key=lambda v: float(v.tags["perplexity"]))
    assert [model.model_id for model in ranked] == [logged_model_id(v) for v in by_tag]
    assert float(by_tag[0].tags["perplexity"]) < float(by_tag[1].tags["perplexity"])


def logged_model_id(version) -> str:
    """The logged model a version was made from: its source, models:/<model id> (the SQLite registry keeps
    no model_id of its own)."""
    assert version.source.startswith("models:/m-"), version.source
    return version.source.removeprefix("models:/")
