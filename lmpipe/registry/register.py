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

Each call to MLflow is a round trip (on SQLite, a commit), so the gate decides before a new version
exists, and the version is created with every tag and its card; only the alias and the completion
tag follow it, the completion tag last.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from lmpipe.config.schema import PipelineConfig
from lmpipe.data.tokenizer_choice import tokenizer_source
from lmpipe.errors import PipelineInputError
from lmpipe.evaluation.report import read_metrics, read_samples
from lmpipe.objectives import Objective
from lmpipe.registry.approval import AWAITING, CARD_FILE, card_heading, held_for_review, review_tags, with_heading
from lmpipe.registry.identity import OUTSIDE_PREFECT, FlowRun, registered_name, registration_key, tracking_uri
from lmpipe.registry.lineage import lineage_tags
from lmpipe.registry.mlflow_run import KEY_TAG, MODEL_URI_TAG, find_logged_run, log_training_run
from lmpipe.registry.model_card import CardFacts, description_of, render
from lmpipe.registry.promotion import (
    ALIAS_TAG,
    REASON_TAG,
    Candidate,
    Decision,
    comparison_tags,
    gate,
)
from lmpipe.registry.reevaluation import registered_metric_on
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
    uri = tracking_uri(config)
    key = registration_key(model_dir, eval_dir)
    existing = find_registered_version(client, name, key)
    if existing is not None and existing.tags.get(COMPLETE_TAG) == "true":
        log.info(f"register: {name} version {existing.version} already holds these artifacts; not adding another")
        return registration_record(
            config,
            objective,
            name,
            int(existing.version),
            existing.run_id,
            client.get_run(existing.run_id).info.experiment_id,
            existing.tags.get(ALIAS_TAG),
            existing.tags.get(REASON_TAG, ""),
            metrics,
        )

    train_metrics = json.loads((model_dir / "train_metrics.json").read_text())
    blocks_dir = artifact_path(config.artifacts.root, read_manifest(eval_dir)["inputs"]["blocks"])
    lineage = lineage_tags(
        config, objective, model_dir, blocks_dir, tokenizer_source(config, objective), flow_run.id, flow_run.url
    )
    samples = read_samples(eval_dir)
    if existing is None:
        experiment_id = experiment_id_for(client, config.registry.experiment, uri)
        run = find_logged_run(client, experiment_id, key, log)
        logged_now = run is None
        if run is not None:
            run_info, model_uri = run.info, run.data.tags[MODEL_URI_TAG]
            log.info(f"register: run {run_info.run_id} already holds the logged model; registering it")
        else:
            run_info, model_uri = log_training_run(
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
    else:
        run_info = client.get_run(existing.run_id).info
        log.info(f"register: completing {name} version {existing.version}, which an earlier attempt registered halfway")

    run_id, experiment_id = run_info.run_id, run_info.experiment_id
    # The gate runs before a new version exists: no champion can be it, so its number is not needed yet.
    candidate = Candidate(
        int(existing.version) if existing is not None else NOT_CREATED_YET,
        metrics["perplexity"],
        metrics["eval_set"],
        lineage["tokenizer.hash"],
        objective,
        metrics.get("bits_per_byte"),
    )
    gate_decision = gate(
        client,
        name,
        candidate,
        config.registry,
        lambda champion, metric: registered_metric_on(name, champion, metric, model_dir, blocks_dir, config, objective),
        log,
    )
    # registry.approval=reviewer: a person gives champion; the version waits as challenger, tagged with what the
    # gate would give.
    held = config.registry.approval == "reviewer" and gate_decision.alias is not None
    decision = held_for_review(gate_decision) if held else gate_decision
    decision_tags = {
        **(review_tags(gate_decision, flow_run.id) if held else {}),
        ALIAS_TAG: decision.alias or "none",
        REASON_TAG: decision.reason,
        **comparison_tags(decision),  # who it was compared with, by which number
    }

    def card_of(number: int) -> str:
        facts = CardFacts(name, number, objective, metrics, train_metrics, lineage, decision, samples, mask_url(uri))
        card = render(facts, config)
        return with_heading(card, card_heading(name, number, AWAITING)) if held else card

    if existing is None:
        version_tags = {
            KEY_TAG: key,
            "objective": objective,
            "eval.set": metrics["eval_set"],
            "perplexity": f"{metrics['perplexity']:.4f}",
            "base_perplexity": f"{metrics['base_perplexity']:.4f}",
            # The causal LM's number that compares across tokenizers (lmpipe.evaluation.bits_per_byte).
            **({"bits_per_byte": f"{metrics['bits_per_byte']:.4f}"} if "bits_per_byte" in metrics else {}),
            # What this version needs kept on the artifact root (`lmpipe gc`), by reference.
            ARTIFACTS_TAG: json.dumps([artifact_ref(model_dir), artifact_ref(eval_dir)]),
            **lineage,
            **decision_tags,
        }
        # The card names its version, so it is written for the number MLflow will give, and checked after.
        expected = next_version_number(client, name)
        version = create_version(
            client, name, model_uri, run_id, version_tags, description_of(card_of(expected)), logged_now
        )
        described = version == expected  # else a deleted top version, or a writer outside the guard, took it
    else:
        version, described = int(existing.version), False
        for tag, value in decision_tags.items():  # the gate may decide otherwise than the attempt that died
            client.set_model_version_tag(name, str(version), tag, value)
    publish_card(client, name, version, run_info.artifact_uri, card_of(version), samples, decision, described)
    log.info(
        f"register: {name} version {version} (run {run_id}), perplexity {metrics['perplexity']:.2f}, "
        f"alias {decision.alias or 'none'}: {decision.reason}"
    )
    return registration_record(
        config, objective, name, version, run_id, experiment_id, decision.alias, decision.reason, metrics
    )


NOT_CREATED_YET = 0  # a new version's number in the gate: MLflow counts versions from 1


def next_version_number(client: Any, name: str) -> int:
    """The number MLflow gives the model's next version: one above the highest (or 1)."""
    latest = client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    return int(latest[0].version) + 1 if latest else 1


def create_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str, new_model: bool
) -> int:
    """What mlflow.register_model does for a logged model, with the tags and description in the call that
    creates the version: the registered model made if new, the version, and the logged model's list of the
    versions made from it (MLflow's UI links them)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        refuse_if_prompt(client, name)  # it existed: a model of ours or someone's, or an MLflow 3 prompt
    model_id = model_uri.removeprefix("models:/")  # MLflow 3 logs every model as models:/<model id>
    created = client.create_model_version(
        name, model_uri, run_id, tags=tags, description=description, model_id=model_id
    )
    # A model logged by this register has no versions yet; one an earlier attempt logged may.
    listed = None if new_model else client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = [*(json.loads(listed) if listed else []), {"name": name, "version": created.version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})
    return int(created.version)


def publish_card(
    client: Any,
    name: str,
    version: int,
    run_artifacts: str,
    card: str,
    samples: list[dict[str, Any]],
    decision: Decision,
    described: bool,
) -> None:
    """Card and samples, the description (unless the version was created with it) and the alias; the completion
    tag goes last, so a crash here is completed on retry."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory(prefix="lmpipe-card-") as scratch:
        (Path(scratch) / CARD_FILE).write_text(card, encoding="utf-8")
        (Path(scratch) / "samples.json").write_text(json.dumps(samples, indent=2, default=str))  # as log_dict
        # Both files in one call, straight to the run's artifact store: MlflowClient.log_artifacts would read
        # the run again for the location the caller already holds.
        get_artifact_repository(run_artifacts, tracking_uri=client.tracking_uri).log_artifacts(scratch)
    if not described:
        client.update_model_version(name, str(version), description=description_of(card))
    registry = registry_writer_of(client)
    if decision.alias is not None:
        registry.set_registered_model_alias(name, decision.alias, str(version))
    registry.set_model_version_tag(name, str(version), COMPLETE_TAG, "true")


def refuse_if_prompt(client: Any, name: str) -> None:
    """MLflow 3 keeps prompts as registered models with a tag; a version of ours must never land in one."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)  # MlflowClient answers "not found" for a name that holds a prompt
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise PipelineInputError(
            f"registry: '{name}' is an MLflow prompt, not a model; choose another registry.clm_model_name or "
            "registry.mlm_model_name"
        ) from None


def registry_writer_of(client: Any) -> Any:
    """MlflowClient's own model-registry client. MlflowClient puts a prompt check (get_registered_model, which
    reads the model with its aliases and latest versions) in front of every alias and version-tag write; a
    registration of ours has already checked (create_version, or its version carries our key), so its last
    two writes go straight to the registry: two reads fewer, ~25% of a small model's registration.
    tests/unit/registry/test_register_helpers.py fails if MlflowClient stops wrapping these calls."""
    return client._get_registry_client()


def registration_record(
    config: PipelineConfig,
    objective: Objective,
    name: str,
    version: int,
    run_id: str,
    experiment_id: str,
    alias: str | None,
    reason: str,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """registration.json: what the flow reports and the Prefect artifacts link to, from what register holds."""
    ui = mlflow_ui_base(config.registry.ui_url, tracking_uri(config))
    ui = link(ui) if ui else None  # a link never carries credentials
    return {
        "objective": objective,
        "model_name": name,
        "version": version,
        "alias": alias or "none",
        "alias_reason": reason,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": mask_url(tracking_uri(config)),  # for people to read; connecting uses the config's
        "run_url": f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if ui else None,
        "version_url": f"{ui}/#/models/{name}/versions/{version}" if ui else None,
        "perplexity": metrics["perplexity"],
        "base_perplexity": metrics["base_perplexity"],
        "eval_set": metrics["eval_set"],
    }
