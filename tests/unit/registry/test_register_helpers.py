"""lmpipe.registry (naming, mlflow_run, register): the pure helpers (params, tracking URI, requirements, names)."""

from __future__ import annotations

import re
from importlib import metadata

import pytest

from lmpipe.config.loading import load_config
from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import OBJECTIVES
from lmpipe.registry.identity import registered_name, tracking_uri
from lmpipe.registry.mlflow_run import flat_params, pip_requirements


def test_flat_params_flattens_nested_sections_into_dotted_strings():
    tree = {
        "train": {"epochs": 3.0, "max_steps": None},
        "model": {"clm": {"n_layers": 2, "pretrained": "gpt2"}},
        "top": [1, 2],
    }
    assert flat_params(tree) == {
        "train.epochs": "3.0",
        "train.max_steps": "None",
        "model.clm.n_layers": "2",
        "model.clm.pretrained": "gpt2",
        "top": "[1, 2]",
    }


def test_flat_params_of_the_whole_config_has_one_entry_per_field():
    params = flat_params(PipelineConfig().model_dump(mode="json"))
    assert params["data.block_size"] == "128"
    assert params["model.mlm.hidden_size"] == "128"
    assert params["registry.experiment"] == "lm-pipeline"
    assert all(isinstance(value, str) for value in params.values())
    assert not any(isinstance(value, dict) for value in params.values())


def test_tracking_uri_prefers_the_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    config = load_config(overrides=["registry.tracking_uri=http://from-config:5000"])
    assert tracking_uri(config) == "http://from-config:5000"


def test_tracking_uri_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert tracking_uri(PipelineConfig()) == "http://from-env:5000"


def test_tracking_uri_defaults_to_sqlite_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri(PipelineConfig()) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_pip_requirements_pin_the_installed_versions():
    requirements = pip_requirements()
    pinned = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups() for line in requirements)
    assert len(pinned) == len(requirements)
    assert {"transformers", "torch", "tokenizers"} <= set(pinned)
    for library, version in pinned.items():
        assert version == metadata.version(library)


def test_pip_requirements_leave_out_torchvision():
    assert not any(line.lower().startswith("torchvision") for line in pip_requirements())


@pytest.mark.parametrize("objective, name", [("clm", "my-clm"), ("mlm", "my-mlm")])
def test_registered_name_follows_the_objective(objective, name):
    config = load_config(overrides=["registry.clm_model_name=my-clm", "registry.mlm_model_name=my-mlm"])
    assert registered_name(config, objective) == name


def test_each_objective_has_a_transformers_pipeline_task():
    from transformers.pipelines import SUPPORTED_TASKS

    tasks = {name: spec.pipeline_task for name, spec in OBJECTIVES.items()}
    assert tasks == {"clm": "text-generation", "mlm": "fill-mask"}
    # MLflow logs the model under this task name, so it must be one transformers can build.
    assert set(tasks.values()) <= set(SUPPORTED_TASKS)


def test_register_reads_the_card_samples_evaluate_wrote_and_names_a_missing_file(tmp_path):
    from lmpipe.errors import PipelineInputError
    from lmpipe.evaluation.report import read_samples

    (tmp_path / "samples.json").write_text('[{"prompt": "The json module", "generated_text": "The json module is"}]')
    assert read_samples(tmp_path)[0]["generated_text"] == "The json module is"
    (tmp_path / "samples.json").unlink()
    with pytest.raises(PipelineInputError, match=r"samples\.json is missing; re-run evaluate"):
        read_samples(tmp_path)


# ---------------------------------------------------------------------------- metrics on the run and the model

EVALUATED = {"perplexity": 225.2, "base_perplexity": 4142.4, "eval_loss": 5.42, "eval_set": "abc"}
TRAINED = {"train_loss": 5.6, "train_tokens": 4096, "train_runtime_s": 5.6, "train_tokens_per_s": 731.4}


def test_evaluation_metrics_hold_the_scores_and_bits_per_byte_only_where_evaluate_measured_it():
    from lmpipe.registry.mlflow_run import evaluation_metrics

    assert evaluation_metrics(EVALUATED) == {"perplexity": 225.2, "base_perplexity": 4142.4, "eval_loss": 5.42}
    assert evaluation_metrics(EVALUATED | {"bits_per_byte": None, "base_bits_per_byte": None}) == evaluation_metrics(
        EVALUATED
    )
    with_bits = evaluation_metrics(EVALUATED | {"bits_per_byte": 1.9, "base_bits_per_byte": 5.1})
    assert (with_bits["bits_per_byte"], with_bits["base_bits_per_byte"]) == (1.9, 5.1)


def test_evaluation_metrics_cap_an_untrained_models_overflowing_perplexity():
    from lmpipe.registry.mlflow_run import evaluation_metrics

    assert evaluation_metrics(EVALUATED | {"base_perplexity": float("inf")})["base_perplexity"] == 1e300


def test_training_metrics_of_an_older_artifact_have_no_system_metrics():
    from lmpipe.registry.mlflow_run import training_metrics

    assert training_metrics(TRAINED) == TRAINED  # train_metrics.json written before they were recorded


def test_training_metrics_put_the_system_metrics_under_system():
    from lmpipe.registry.mlflow_run import training_metrics

    cpu = training_metrics(TRAINED | {"peak_host_memory_mb": 812.5})
    assert cpu == TRAINED | {"system/peak_host_memory_mb": 812.5}
    gpu = training_metrics(
        TRAINED | {"peak_host_memory_mb": 812.5, "gpu_peak_memory_mb": 2048.0, "gpu_utilization_pct": 87.5}
    )
    assert {key: value for key, value in gpu.items() if key.startswith("system/")} == {
        "system/peak_host_memory_mb": 812.5,
        "system/gpu_peak_memory_mb": 2048.0,
        "system/gpu_utilization_pct": 87.5,
    }


def test_run_and_model_metrics_put_the_scores_on_the_model_with_their_set_and_the_curves_on_the_run_only(tmp_path):
    from types import SimpleNamespace

    from lmpipe.registry.mlflow_run import run_and_model_metrics

    (tmp_path / "train_history.json").write_text('[{"step": 4, "loss": 6.1, "learning_rate": 0.001}]')
    evaluated = EVALUATED | {"base_eval_loss": 8.3}
    test_set = SimpleNamespace(name="test-blocks", digest="abcd1234")
    points = run_and_model_metrics("run", "m-1", test_set, evaluated, TRAINED | {"train_steps": 8}, tmp_path, 7)
    on_model = {p.key: (p.dataset_name, p.dataset_digest) for p in points if p.model_id == "m-1"}
    assert on_model == {
        **{key: (None, None) for key in TRAINED},  # as log_model copies a run's step-0 metrics onto its model
        **{key: ("test-blocks", "abcd1234") for key in ("perplexity", "base_perplexity", "eval_loss")},
    }
    curves = sorted((p.key, p.step) for p in points if p.model_id is None)
    assert curves == [("eval/loss", 0), ("eval/loss", 8), ("train/learning_rate", 4), ("train/loss", 4)]
    assert {p.timestamp for p in points} == {7} and {p.step for p in points if p.model_id} == {0}


# ---------------------------------------------------------------------------- writes without MLflow's prompt lookups


@pytest.fixture
def sqlite_registry(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("e"))
    client.create_registered_model("m")
    client.create_model_version("m", "file:/nowhere", run.info.run_id)
    return client


def test_mlflow_still_reads_the_model_before_each_alias_and_tag_write_and_our_writer_does_not(
    sqlite_registry, monkeypatch
):
    from mlflow import MlflowClient

    from lmpipe.registry.register import registry_writer_of

    reads = []
    original = MlflowClient.get_registered_model
    monkeypatch.setattr(
        MlflowClient, "get_registered_model", lambda self, name: reads.append(name) or original(self, name)
    )

    sqlite_registry.set_registered_model_alias("m", "champion", "1")
    sqlite_registry.set_model_version_tag("m", "1", "t", "v")
    assert reads == ["m", "m"], "MlflowClient no longer checks for prompts first: registry_writer_of is not needed"

    reads.clear()
    registry_writer_of(sqlite_registry).set_registered_model_alias("m", "challenger", "1")
    registry_writer_of(sqlite_registry).set_model_version_tag("m", "1", "lmpipe.complete", "true")
    assert reads == []
    version = sqlite_registry.get_model_version("m", "1")
    assert version.tags["lmpipe.complete"] == "true" and "challenger" in version.aliases


def test_a_registered_name_held_by_an_mlflow_prompt_is_refused_in_one_line(tmp_path):
    from mlflow import MlflowClient

    from lmpipe.errors import PipelineInputError
    from lmpipe.registry.register import refuse_if_prompt

    # A client of its own: mlflow.set_registry_uri would also set MLFLOW_REGISTRY_URI in this process's
    # environment (and never unset it), sending every later subprocess of this test worker to this store.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.register_prompt("summarise", template="Summarise {{text}}")
    with pytest.raises(
        PipelineInputError, match=r"^registry: 'summarise' is an MLflow prompt.*clm_model_name"
    ) as error:
        refuse_if_prompt(client, "summarise")
    assert "\n" not in str(error.value)
    client.create_registered_model("a-model")
    refuse_if_prompt(client, "a-model")  # an ordinary model passes
