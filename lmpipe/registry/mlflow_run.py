"""The MLflow run behind a model version: params, metrics, curves, dataset inputs and the logged model,
which carries its scores on the evaluation set (what search_logged_models ranks models by).

A run is created with the registration key and tagged with the logged model's URI last, so a
register attempt that dies in between is recognised (and never reused) by the next one.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective, spec_of
from lmpipe.registry.checkpoint_staging import checkpoint_staged_by_links
from lmpipe.registry.large_upload import multipart_upload_if_needed
from lmpipe.registry.mlflow_compat import pipeline_classes_resolved
from lmpipe.registry.secrets import masked
from lmpipe.store.manifest import MANIFEST

_log = logging.getLogger(__name__)

KEY_TAG = "lmpipe.fingerprint"  # on the run and the version: the idempotency key
MODEL_URI_TAG = "lmpipe.model_uri"  # on the run, once its model is logged: the run can be registered
# Exactly what serving the model needs; without an explicit list MLflow goes looking for torchvision.
_SERVING_LIBRARIES = ("transformers", "torch", "tokenizers", "safetensors", "accelerate")


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'epochs': 3}} -> {'train.epochs': '3'}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def pip_requirements() -> list[str]:
    return list(_installed_serving_libraries())


@functools.cache  # what this process imported; reading each library's metadata again costs ~10 ms a registration
def _installed_serving_libraries() -> tuple[str, ...]:
    return tuple(f"{lib}=={metadata.version(lib)}" for lib in _SERVING_LIBRARIES)


# In train's artifact but not part of the model a reviewer loads: our cache manifest, the Trainer's
# pickled arguments (a pickle has no place in a registry), and records the run already holds as metrics.
NOT_LOGGED_WITH_THE_MODEL = frozenset({MANIFEST, "training_args.bin", "train_metrics.json", "train_history.json"})


@contextmanager
def model_files_view(model_dir: Path) -> Iterator[Path]:
    """A directory of symlinks to the model's own files (weights, config, tokenizer), for MLflow to copy."""
    with tempfile.TemporaryDirectory(prefix="lmpipe-model-") as scratch:
        view = Path(scratch) / model_dir.name
        view.mkdir()
        for path in model_dir.iterdir():
            if path.name not in NOT_LOGGED_WITH_THE_MODEL:
                (view / path.name).symlink_to(path.resolve())
        yield view


def curve_points(model_dir: Path, metrics: dict[str, Any], train_steps: int, now: int) -> list[Any]:
    """train/loss and train/learning_rate per logging step; eval/loss per evaluation (base at 0, trained at the end)."""
    from mlflow.entities import Metric

    points = [
        Metric("eval/loss", min(metrics["base_eval_loss"], 1e300), now, 0),
        Metric("eval/loss", metrics["eval_loss"], now, train_steps),
    ]
    history_file = model_dir / "train_history.json"
    for entry in json.loads(history_file.read_text()) if history_file.is_file() else []:
        points.append(Metric("train/loss", entry["loss"], now, entry["step"]))
        if entry.get("learning_rate") is not None:
            points.append(Metric("train/learning_rate", entry["learning_rate"], now, entry["step"]))
    return points


def evaluation_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """What the model scored on the evaluation set, logged on the run and on the logged model: perplexity and
    eval loss, the base model's perplexity and, where evaluate measured it (the causal LM), bits per byte."""
    scores = {
        "perplexity": metrics["perplexity"],
        "base_perplexity": metrics["base_perplexity"],
        "eval_loss": metrics["eval_loss"],
        **{name: metrics[name] for name in ("bits_per_byte", "base_bits_per_byte") if metrics.get(name) is not None},
    }
    return {name: min(value, 1e300) for name, value in scores.items()}  # an untrained model's may overflow


# train_metrics.json key -> run metric, shown in the run page's System metrics tab. Artifacts trained before
# these were recorded have none of them; CPU runs have no GPU ones.
SYSTEM_METRICS = {
    "peak_host_memory_mb": "system/peak_host_memory_mb",
    "gpu_peak_memory_mb": "system/gpu_peak_memory_mb",
    "gpu_utilization_pct": "system/gpu_utilization_pct",
}


def training_metrics(train_metrics: dict[str, Any]) -> dict[str, float]:
    """What a reviewer compares training by: its loss, speed, size and footprint."""
    return {
        "train_loss": train_metrics["train_loss"],
        "train_tokens": train_metrics["train_tokens"],
        "train_runtime_s": train_metrics["train_runtime_s"],
        "train_tokens_per_s": train_metrics["train_tokens_per_s"],
        # Model FLOPs utilisation, from GPU runs only (see lmpipe.compute.throughput).
        **({"train_mfu": train_metrics["train_mfu"]} if "train_mfu" in train_metrics else {}),
        **{run_key: train_metrics[key] for key, run_key in SYSTEM_METRICS.items() if key in train_metrics},
    }


def run_and_model_metrics(
    run_id: str,
    model_id: str,
    evaluation_set: Any,
    metrics: dict[str, Any],
    train_metrics: dict[str, Any],
    model_dir: Path,
    now: int,
) -> list[Any]:
    """The run's metrics, and the logged model's with them: a metric with a model id is stored on both.
    - the training's figures, on the model as log_model would have copied them (step 0, no dataset);
    - the scores, tied to the evaluation set: the model's page shows them, search_logged_models ranks by them;
    - the curves, on the run only: a step-0 copy on the model would show the base model's eval/loss as its own."""
    from mlflow.entities import Metric

    evaluated_on = {"dataset_name": evaluation_set.name, "dataset_digest": evaluation_set.digest}
    return [
        *(Metric(k, v, now, 0, model_id=model_id, run_id=run_id) for k, v in training_metrics(train_metrics).items()),
        *(
            Metric(k, v, now, 0, model_id=model_id, run_id=run_id, **evaluated_on)
            for k, v in evaluation_metrics(metrics).items()
        ),
        *curve_points(model_dir, metrics, train_metrics["train_steps"], now),
    ]


def log_datasets(config: PipelineConfig, blocks_dir: Path, lineage: dict[str, str]) -> Any:
    """The train and test blocks as run inputs: source, digest and size, without loading them again.
    Returns the test blocks' dataset: the evaluation set the model's metrics are tied to."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    if config.data.source == "hub":
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        source = HuggingFaceDatasetSource(
            config.data.path,
            config_name=config.data.hub_config_name,
            split=config.data.split,
            revision=config.data.revision,
        )
    else:
        from mlflow.data.sources import LocalArtifactDatasetSource

        source = LocalArtifactDatasetSource(str(blocks_dir))
    splits = (("train", "training"), ("test", "evaluation"))
    datasets = [MetaDataset(source, name=f"{split}-blocks", digest=blocks_dir.name[:8]) for split, _ in splits]
    mlflow.log_inputs(  # one call for both
        datasets=datasets,
        contexts=[context for _, context in splits],
        tags_list=[
            {"blocks": lineage[f"data.{split}_blocks"], "tokens": lineage[f"data.{split}_tokens"]}
            for split, _ in splits
        ],
    )
    return datasets[1]


def find_logged_run(client: Any, experiment_id: str, key: str, log: Any) -> Any | None:
    """A run an earlier attempt finished logging (model included) but never registered; abandoned ones are closed."""
    runs = client.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}'", order_by=["attributes.start_time ASC"])
    logged = [run for run in runs if MODEL_URI_TAG in run.data.tags]
    for run in runs:
        if run not in logged and run.info.status == "RUNNING":  # killed mid-logging: mark it, never reuse it
            log.warning(f"register: run {run.info.run_id} was left halfway by an earlier attempt; marking it FAILED")
            client.set_terminated(run.info.run_id, "FAILED")
    return logged[0] if logged else None


def log_training_run(
    client: Any,
    experiment_id: str,
    key: str,
    objective: Objective,
    model_dir: Path,
    blocks_dir: Path,
    metrics: dict[str, Any],
    train_metrics: dict[str, Any],
    config: PipelineConfig,
    lineage: dict[str, str],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> tuple[Any, str]:
    """One MLflow run with everything but the version; returns (its RunInfo, the model URI)."""
    import mlflow
    from mlflow.entities import Param

    # Created with its key, so that a retry finds this run whatever happens next; its other tags ride along.
    tags = {KEY_TAG: key, "objective": objective, "device": train_metrics["device"], **lineage}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{objective}-{key[:8]}", tags=tags) as run:
        run_id = run.info.run_id
        params = flat_params(masked(config.model_dump(mode="json")))  # no credentials in params
        evaluation_set = log_datasets(config, blocks_dir, lineage)
        with (
            pipeline_classes_resolved(),
            checkpoint_staged_by_links(),  # MLflow's staging copy of the weights becomes links
            model_files_view(model_dir) as checkpoint,
            multipart_upload_if_needed(checkpoint, log),  # a file over 5 GiB goes up in parts
        ):
            info = mlflow.transformers.log_model(
                # The saved checkpoint, not loaded components: MLflow copies the files as they are,
                # instead of loading the model and serializing it again (register needs no model memory).
                transformers_model=str(checkpoint),
                task=spec_of(objective).pipeline_task,
                name="model",
                pip_requirements=pip_requirements(),
                params=params,  # the logged model's; the run's go in with the figures below
            )
        # The params and every figure in one call, after the model: log_model would copy what the run held
        # before it onto the logged model, reading its history metric by metric; these carry their model id.
        client.log_batch(
            run_id,
            metrics=run_and_model_metrics(
                run_id, info.model_id, evaluation_set, metrics, train_metrics, model_dir, int(time.time() * 1000)
            ),
            params=[Param(k, v) for k, v in params.items()],
            synchronous=True,  # stored before MODEL_URI_TAG, even with MLflow's async logging switched on
        )
        # Last: the run is complete and can be registered (a retry that finds it has everything above).
        client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return run.info, info.model_uri
