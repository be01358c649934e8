"""register: log the run to MLflow and register the model version with its perplexity.

One MLflow run per trained model: the resolved config as params, the metrics, and the model in
the `transformers` flavor (tokenizer included). The version is tagged with the Prefect flow
run, the data fingerprint and the block size. A version is only created after everything else
succeeded, and never twice for the same artifacts: an earlier version carrying the same
`lmpipe.fingerprint` tag is reused.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from lmpipe.artifacts import artifact_dir, building, cached_stage, code_version, is_complete, read_manifest
from lmpipe.config import Objective, PipelineConfig, resolve_tracking_uri
from lmpipe.errors import PipelineInputError, retry_unless_input_error

_log = logging.getLogger(__name__)

PIPELINE_TASK = {"clm": "text-generation", "mlm": "fill-mask"}
FINGERPRINT_TAG = "lmpipe.fingerprint"
# Exactly what serving the model needs; without an explicit list MLflow goes looking for torchvision.
_SERVING_LIBRARIES = ("transformers", "torch", "tokenizers", "safetensors", "accelerate")


def tracking_uri(config: PipelineConfig) -> str:
    return resolve_tracking_uri(config.registry.tracking_uri)


def registered_name(config: PipelineConfig, objective: Objective) -> str:
    return config.registry.clm_model_name if objective == "clm" else config.registry.mlm_model_name


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
    return [f"{lib}=={metadata.version(lib)}" for lib in _SERVING_LIBRARIES]


def log_training_curves(client, run_id: str, model_dir: Path) -> None:
    """train/loss and train/learning_rate per logging step, so MLflow plots the curves."""
    from mlflow.entities import Metric

    history_file = model_dir / "train_history.json"
    if not history_file.is_file():
        return
    now = int(time.time() * 1000)
    points = []
    for entry in json.loads(history_file.read_text()):
        points.append(Metric("train/loss", entry["loss"], now, entry["step"]))
        if entry.get("learning_rate") is not None:
            points.append(Metric("train/learning_rate", entry["learning_rate"], now, entry["step"]))
    for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=points[start : start + 1000])


def load_components(objective: Objective, model_dir: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    return {"model": auto.from_pretrained(str(model_dir)), "tokenizer": AutoTokenizer.from_pretrained(str(model_dir))}


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not uri.startswith("sqlite:///"):
        return client.create_experiment(name)  # a tracking server decides where artifacts go
    # Next to the database, absolute: a SQLite store otherwise puts artifacts relative to
    # whatever directory the process happens to run in.
    artifact_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())


def find_registered_version(client, name: str, fingerprint: str):
    """The version already registered for these exact artifacts, if any."""
    # An error here must fail the task (and be retried), never be read as "not registered yet".
    versions = client.search_model_versions(f"name = '{name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register_model(
    objective: Objective,
    model_dir: Path,
    eval_dir: Path,
    config: PipelineConfig,
    fingerprint: str,
    flow_run_id: str | None,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, Any]:
    """Log params, metrics and the model to MLflow and register a version; returns what was registered."""
    import mlflow
    from mlflow import MlflowClient

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    if not math.isfinite(metrics["perplexity"]):
        raise PipelineInputError(
            f"register: {objective} perplexity is {metrics['perplexity']}; training diverged, so nothing is "
            "registered (lower train.learning_rate?)"
        )
    train_metrics = json.loads((model_dir / "train_metrics.json").read_text())
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = registered_name(config, objective)

    existing = find_registered_version(client, name, fingerprint)
    if existing is not None:
        log.info(f"register: {name} version {existing.version} already holds these artifacts; not adding another")
        return _registration(objective, name, existing.version, existing.run_id, uri, metrics)

    blocks = read_manifest(eval_dir)["inputs"]["blocks"]
    experiment_id = _experiment_id(client, config.registry.experiment, uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{objective}-{fingerprint[:8]}") as run:
        mlflow.log_params(flat_params(config.model_dump(mode="json")))
        mlflow.log_metrics(
            {
                "perplexity": metrics["perplexity"],
                "base_perplexity": min(metrics["base_perplexity"], 1e300),
                "eval_loss": metrics["eval_loss"],
                "train_loss": train_metrics["train_loss"],
                "train_tokens": train_metrics["train_tokens"],
                "train_runtime_s": train_metrics["train_runtime_s"],
            }
        )
        log_training_curves(client, run.info.run_id, model_dir)
        mlflow.set_tags(
            {"objective": objective, "prefect.flow_run_id": flow_run_id or "", "device": train_metrics["device"]}
        )
        info = mlflow.transformers.log_model(
            # Loaded components: MLflow 3's local-checkpoint path breaks on transformers 5's lazy
            # pipeline registry ('str' object has no attribute '__name__').
            transformers_model=load_components(objective, model_dir),
            task=PIPELINE_TASK[objective],
            name="model",
            pip_requirements=pip_requirements(),
        )
        version = mlflow.register_model(
            info.model_uri,
            name,
            tags={
                FINGERPRINT_TAG: fingerprint,
                "prefect.flow_run_id": flow_run_id or "",
                "data.fingerprint": Path(blocks).name,
                "data.block_size": str(config.data.block_size),
                "eval.set": metrics["eval_set"],
                "objective": objective,
                "perplexity": f"{metrics['perplexity']:.4f}",
                "base_perplexity": f"{metrics['base_perplexity']:.4f}",
            },
        )
    client.update_model_version(
        name,
        version.version,
        description=f"{objective.upper()} perplexity {metrics['perplexity']:.2f} (base model "
        f"{metrics['base_perplexity']:.2f}) on eval set {metrics['eval_set']}, block_size {config.data.block_size}.",
    )
    log.info(
        f"register: {name} version {version.version} (run {run.info.run_id}), perplexity {metrics['perplexity']:.2f}"
    )
    return _registration(objective, name, version.version, run.info.run_id, uri, metrics)


def _registration(
    objective: str, name: str, version: str | int, run_id: str, uri: str, metrics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "objective": objective,
        "model_name": name,
        "version": int(version),
        "run_id": run_id,
        "tracking_uri": uri,
        "perplexity": metrics["perplexity"],
        "base_perplexity": metrics["base_perplexity"],
        "eval_set": metrics["eval_set"],
    }


def _publish_to_prefect_ui(registration: dict[str, Any]) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"registered-{registration['model_name']}".lower())
    create_markdown_artifact(
        key=key,
        description=f"MLflow registration of {registration['model_name']}",
        markdown=(
            f"### {registration['model_name']} v{registration['version']}\n\n"
            f"| perplexity | base perplexity | MLflow run | tracking URI |\n|---|---|---|---|\n"
            f"| {registration['perplexity']:.2f} | {registration['base_perplexity']:.2f} | {registration['run_id']} "
            f"| {registration['tracking_uri']} |\n"
        ),
    )


# ---------------------------------------------------------------------------- task


def register_output_dir(model_dir: str, eval_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "model": Path(model_dir).name,
        "eval": Path(eval_dir).name,
        "name": registered_name(config, objective),
        "experiment": config.registry.experiment,
        "tracking_uri": tracking_uri(config),
        "code": code_version(__file__),
    }
    return artifact_dir(config.artifacts.root, f"register-{objective}", inputs)


# Retrying is safe: a version that was already created is found again by its fingerprint tag.
@task(
    name="register",
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_unless_input_error,
    **cached_stage(register_output_dir),
)
def register(model_dir: str, eval_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Log to MLflow and register a model version; returns the directory holding registration.json."""
    out = register_output_dir(model_dir, eval_dir, config, objective)
    if not is_complete(out):
        with building(out, "register", {"model": model_dir, "eval": eval_dir}) as scratch:
            registration = register_model(
                objective,
                Path(model_dir),
                Path(eval_dir),
                config,
                out.name,
                str(runtime.flow_run.id or ""),
                get_run_logger(),
            )
            (scratch / "registration.json").write_text(json.dumps(registration, indent=2))
        _publish_to_prefect_ui(registration)
    return str(out)
