"""lmpipe.registry.mlflow_compat and the model view: MLflow logs a saved checkpoint (model files only) on
transformers 5."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from transformers import pipelines

from lmpipe.config.schema import ModelConfig
from lmpipe.models.base import build_base_model
from lmpipe.objectives import spec_of
from lmpipe.registry.mlflow_compat import pipeline_classes_resolved
from lmpipe.registry.mlflow_run import NOT_LOGGED_WITH_THE_MODEL, model_files_view, pip_requirements

TINY_MODEL = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)


def test_mlflow_still_needs_the_shim_on_these_versions(tmp_path):
    """When this fails, MLflow reads transformers 5's pipeline registry itself: delete
    lmpipe/registry/mlflow_compat.py."""
    from mlflow.transformers.flavor_config import build_flavor_config_from_local_checkpoint

    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(AttributeError, match="has no attribute '__name__'"):
        build_flavor_config_from_local_checkpoint(str(tmp_path), "text-generation")


def test_inside_check_task_names_the_class_and_after_it_is_transformers_own_again():
    original = pipelines.check_task
    with pipeline_classes_resolved():
        _, targeted, _ = pipelines.check_task("text-generation")
        assert targeted["impl"] is pipelines.TextGenerationPipeline
    assert pipelines.check_task is original
    assert isinstance(pipelines.check_task("text-generation")[1]["impl"], str)  # transformers' registry untouched


def test_overlapping_uses_from_two_threads_keep_the_shim_until_the_last_one_leaves():
    original = pipelines.check_task
    first_inside, first_may_leave, first_left = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with pipeline_classes_resolved():
            first_inside.set()
            first_may_leave.wait(10)
        first_left.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(10)
    with pipeline_classes_resolved():
        first_may_leave.set()
        assert first_left.wait(10)  # the first has left while this one is still inside
        assert pipelines.check_task("fill-mask")[1]["impl"] is pipelines.FillMaskPipeline
    thread.join(10)
    assert pipelines.check_task is original


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_a_saved_checkpoint_logs_and_loads_back_as_a_pipeline(objective, tiny_tokenizer, tmp_path):
    import mlflow
    import torch

    checkpoint = tmp_path / "model"
    model = build_base_model(objective, TINY_MODEL, tiny_tokenizer, seed=0, block_size=32)
    model.save_pretrained(str(checkpoint))
    tiny_tokenizer.save_pretrained(str(checkpoint))
    model_files = {path.name for path in checkpoint.iterdir()}
    for name in NOT_LOGGED_WITH_THE_MODEL | {"pipeline_config.json"}:  # what train's artifact adds
        (checkpoint / name).write_text("{}")

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("compat", artifact_location=(tmp_path / "store").as_uri())
    with mlflow.start_run(experiment_id=experiment), pipeline_classes_resolved(), model_files_view(checkpoint) as view:
        info = mlflow.transformers.log_model(
            transformers_model=str(view), task=spec_of(objective).pipeline_task, name="model",
            pip_requirements=pip_requirements(),
        )  # fmt: skip

    # The model's files and the config that made it, copied (not links); not the manifest, pickle or records.
    logged = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri)) / "model"
    assert {path.name for path in logged.iterdir()} == model_files | {"pipeline_config.json"}
    assert not any(path.is_symlink() for path in logged.iterdir())

    loaded = mlflow.transformers.load_model(info.model_uri, return_type="components")
    assert type(loaded["model"]) is type(model)
    for name, weight in model.state_dict().items():
        assert torch.equal(loaded["model"].state_dict()[name], weight), name
    assert loaded["tokenizer"]("the json module")["input_ids"] == tiny_tokenizer("the json module")["input_ids"]
    pipeline = mlflow.transformers.load_model(info.model_uri)
    assert pipeline.task == spec_of(objective).pipeline_task
