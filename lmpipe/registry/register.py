"""The register stage's work: hand a trained model to MLflow for review, with its perplexity, lineage and card.

One MLflow run per trained model: the resolved config as params, the metrics and curves, the
datasets as inputs, and the model in the `transformers` flavor (tokenizer included), logged from
train's saved files without loading it. Then a model version, tagged with its lineage, described
by its model card (with the samples evaluate generated), and given an alias by the
champion/challenger gate (lmpipe.registry.promotion).

Registration is idempotent and resumable. Its key is derived from the model and evaluation
artifacts, never from the flow run:
- a version carrying the key and the completion tag is the answer: nothing is added;
- a version carrying the key without it was registered halfway: it is completed;
- a run carrying the key and a logged model, with no version yet, is registered, not re-logged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from lmpipe.compute.devices import plan_device
from lmpipe.config.schema import PipelineConfig
from lmpipe.data.tokenizer_choice import tokenizer_source
from lmpipe.errors import PipelineInputError
from lmpipe.evaluation.perplexity import model_eval_loss, perplexity_from_loss, test_blocks
from lmpipe.evaluation.report import read_metrics, read_samples
from lmpipe.objectives import Objective
from lmpipe.registry.identity import OUTSIDE_PREFECT, FlowRun, registered_name, registration_key, tracking_uri
from lmpipe.registry.lineage import lineage_tags
from lmpipe.registry.mlflow_run import KEY_TAG, MODEL_URI_TAG, find_logged_run, log_training_run
from lmpipe.registry.model_card import CardFacts, description_of, render
from lmpipe.registry.promotion import ALIAS_TAG, REASON_TAG, Candidate, Decision, gate
from lmpipe.registry.secrets import link, mask_url
from lmpipe.registry.tracking import experiment_id_for, mlflow_ui_base
from lmpipe.store.keys import artifact_path, artifact_ref
from lmpipe.store.manifest import read_manifest

_log = logging.getLogger(__name__)

COMPLETE_TAG = "lmpipe.complete"  # on the version, written last: card, tags and alias are all in place
ARTIFACTS_TAG = "lmpipe.artifacts"  # on the version: the model and evaluation artifacts it was made from

WriterGuard = Callable[[str], AbstractContextManager[None]]  # the model's name -> held while writing it


# ---------------------------------------------------------------------------- version


def find_registered_version(client: Any, name: str, key: str) -> Any | None:
    """The version already registered for these exact artifacts, if any."""
    # An error here must fail the task (and be retried), never be read as "not registered yet".
    versions = client.search_model_versions(f"name = '{name}' and tags.`{KEY_TAG}` = '{key}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def registered_perplexity_on(
    name: str, version: int, blocks_dir: Path, config: PipelineConfig, objective: Objective
) -> float:
    """Perplexity of a registered version on this run's evaluation set (same code as evaluate)."""
    import mlflow

    components = mlflow.transformers.load_model(f"models:/{name}/{version}", return_type="components")
    tokenizer = components["tokenizer"]
    loss, _ = model_eval_loss(
        components["model"], tokenizer, test_blocks(blocks_dir, config), config, objective, plan_device("fp32").device
    )
    return perplexity_from_loss(loss)


def no_guard(_name: str) -> AbstractContextManager[None]:
    return nullcontext()


def register_model(
    objective: Objective,
    model_dir: Path,
    eval_dir: Path,
    config: PipelineConfig,
    flow_run: FlowRun = OUTSIDE_PREFECT,
    log: logging.Logger | logging.LoggerAdapter = _log,
    writer_guard: WriterGuard = no_guard,
) -> dict[str, Any]:
    """Log, register, gate and describe one model version; returns what was registered.

    Finding or creating the version and deciding its alias happen inside `writer_guard(name)`: the register
    task passes a Prefect global concurrency limit per model, so runs on different machines take turns."""
    import mlflow
    from mlflow import MlflowClient

    metrics = read_metrics(eval_dir)
    if not math.isfinite(metrics["perplexity"]):
        raise PipelineInputError(
            f"register: {objective} perplexity is {metrics['perplexity']}; training diverged, so nothing is "
            "registered (lower train.learning_rate?)"
        )
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = registered_name(config, objective)
    with writer_guard(name):
        return write_version(client, name, objective, model_dir, eval_dir, metrics, config, flow_run, log)


def write_version(
    client: Any,
    name: str,
    objective: Objective,
    model_dir: Path,
    eval_dir: Path,
    metrics: dict[str, Any],
    config: PipelineConfig,
    flow_run: FlowRun,
    log: logging.Logger | logging.LoggerAdapter,
) -> dict[str, Any]:
    """register_model's work, done by the model's only writer: find or create the version, gate it, describe it."""
    import mlflow

    uri = tracking_uri(config)
    key = registration_key(model_dir, eval_dir)
    existing = find_registered_version(client, name, key)
    if existing is not None and existing.tags.get(COMPLETE_TAG) == "true":
        log.info(f"register: {name} version {existing.version} already holds these artifacts; not adding another")
        return registration_record(client, config, objective, name, existing, metrics)

    train_metrics = json.loads((model_dir / "train_metrics.json").read_text())
    blocks_dir = artifact_path(config.artifacts.root, read_manifest(eval_dir)["inputs"]["blocks"])
    lineage = lineage_tags(
        config, objective, model_dir, blocks_dir, tokenizer_source(config, objective), flow_run.id, flow_run.url
    )
    samples = read_samples(eval_dir)
    if existing is None:
        experiment_id = experiment_id_for(client, config.registry.experiment, uri)
        run = find_logged_run(client, experiment_id, key, log)
        if run is not None:
            run_id, model_uri = run.info.run_id, run.data.tags[MODEL_URI_TAG]
            log.info(f"register: run {run_id} already holds the logged model; registering it")
        else:
            run_id, model_uri = log_training_run(
                client,
                experiment_id,
                key,
                objective,
                model_dir,
                blocks_dir,
                metrics,
                train_metrics,
                config,
                lineage,
                log,
            )
        version_tags = {
            KEY_TAG: key,
            "objective": objective,
            "eval.set": metrics["eval_set"],
            "perplexity": f"{metrics['perplexity']:.4f}",
            "base_perplexity": f"{metrics['base_perplexity']:.4f}",
            # What this version needs kept on the artifact root (`lmpipe gc`), by reference.
            ARTIFACTS_TAG: json.dumps([artifact_ref(model_dir), artifact_ref(eval_dir)]),
            **lineage,
        }
        version = int(mlflow.register_model(model_uri, name, tags=version_tags).version)
    else:
        run_id, version = existing.run_id, int(existing.version)
        log.info(f"register: completing {name} version {version}, which an earlier attempt registered halfway")

    candidate = Candidate(version, metrics["perplexity"], metrics["eval_set"], lineage["tokenizer.hash"])
    decision = gate(
        client,
        name,
        candidate,
        config.registry,
        lambda champion: registered_perplexity_on(name, champion, blocks_dir, config, objective),
        log,
    )
    facts = CardFacts(name, version, objective, metrics, train_metrics, lineage, decision, samples, mask_url(uri))
    publish_card(client, name, version, run_id, render(facts, config), samples, decision)
    log.info(
        f"register: {name} version {version} (run {run_id}), perplexity {metrics['perplexity']:.2f}, "
        f"alias {decision.alias or 'none'}: {decision.reason}"
    )
    return registration_record(client, config, objective, name, client.get_model_version(name, str(version)), metrics)


def publish_card(
    client: Any, name: str, version: int, run_id: str, card: str, samples: list[dict[str, Any]], decision: Decision
) -> None:
    """Card, samples, the alias and its reason; the completion tag goes last, so a crash here is completed on retry."""
    client.log_text(run_id, card, "model_card.md")
    client.log_dict(run_id, samples, "samples.json")
    client.update_model_version(name, str(version), description=description_of(card))
    client.set_model_version_tag(name, str(version), ALIAS_TAG, decision.alias or "none")
    client.set_model_version_tag(name, str(version), REASON_TAG, decision.reason)
    if decision.champion is not None:  # who it was compared with, on this version's evaluation set
        champion = decision.champion
        client.set_model_version_tag(name, str(version), "champion.version", str(champion.version))
        client.set_model_version_tag(name, str(version), "champion.perplexity", f"{champion.perplexity:.4f}")
        client.set_model_version_tag(
            name, str(version), "champion.reevaluated", str(champion.own_set_perplexity is not None).lower()
        )
    if decision.alias is not None:
        client.set_registered_model_alias(name, decision.alias, str(version))
    client.set_model_version_tag(name, str(version), COMPLETE_TAG, "true")


def registration_record(
    client: Any, config: PipelineConfig, objective: Objective, name: str, version: Any, metrics: dict[str, Any]
) -> dict[str, Any]:
    """registration.json: what the flow reports and the Prefect artifacts link to."""
    run = client.get_run(version.run_id)
    ui = mlflow_ui_base(config.registry.ui_url, tracking_uri(config))
    ui = link(ui) if ui else None  # a link never carries credentials
    return {
        "objective": objective,
        "model_name": name,
        "version": int(version.version),
        "alias": version.tags.get(ALIAS_TAG, "none"),
        "alias_reason": version.tags.get(REASON_TAG, ""),
        "run_id": version.run_id,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": mask_url(tracking_uri(config)),  # for people to read; connecting uses the config's
        "run_url": f"{ui}/#/experiments/{run.info.experiment_id}/runs/{version.run_id}" if ui else None,
        "version_url": f"{ui}/#/models/{name}/versions/{version.version}" if ui else None,
        "perplexity": metrics["perplexity"],
        "base_perplexity": metrics["base_perplexity"],
        "eval_set": metrics["eval_set"],
    }
