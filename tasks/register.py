"""register: hand a trained model to MLflow for review, with its perplexity, lineage and model card.

One MLflow run per trained model: the resolved config as params, the metrics and curves, the
datasets as inputs, and the model in the `transformers` flavor (tokenizer included), logged from
train's saved files without loading it. Then a model version, tagged with its lineage, described
by its model card (with the samples evaluate generated), and given an alias by the
champion/challenger gate (lmpipe.promotion).

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
from pathlib import Path
from typing import Any

from prefect import get_run_logger, runtime, task

from lmpipe.artifacts import artifact_dir, cached_stage, code_version, ensure_built, fingerprint, read_manifest
from lmpipe.config import Objective, PipelineConfig, resolve_tracking_uri
from lmpipe.devices import plan_device
from lmpipe.errors import PipelineInputError, retry_unless_input_error
from lmpipe.lineage import lineage_tags
from lmpipe.mlflow_run import (
    KEY_TAG,
    MODEL_URI_TAG,
    experiment_id_for,
    find_logged_run,
    log_training_run,
)
from lmpipe.model_card import CardFacts, description_of, render
from lmpipe.prefect_reports import mlflow_ui_base, publish_registration
from lmpipe.promotion import Candidate, Decision, gate
from lmpipe.secrets import link, mask_url
from tasks.evaluate import SAMPLES_FILE, model_eval_loss, perplexity_from_loss, test_blocks
from tasks.tokenize_texts import tokenizer_source

_log = logging.getLogger(__name__)

COMPLETE_TAG = "lmpipe.complete"  # on the version, written last: card, tags and alias are all in place
ALIAS_TAG, REASON_TAG = "lmpipe.alias", "lmpipe.alias_reason"


def tracking_uri(config: PipelineConfig) -> str:
    return resolve_tracking_uri(config.registry.tracking_uri)


def registered_name(config: PipelineConfig, objective: Objective) -> str:
    return config.registry.clm_model_name if objective == "clm" else config.registry.mlm_model_name


def registration_key(model_dir: Path, eval_dir: Path) -> str:
    """The same trained model with the same evaluation is one version, whichever flow run registers it."""
    return fingerprint({"model": Path(model_dir).name, "eval": Path(eval_dir).name})


def card_samples_of(eval_dir: Path) -> list[dict[str, Any]]:
    """The samples evaluate generated for the card: register never loads the model to make them."""
    samples_file = eval_dir / SAMPLES_FILE
    if not samples_file.is_file():
        raise PipelineInputError(f"register: {samples_file} is missing; re-run evaluate (its artifact is incomplete)")
    return json.loads(samples_file.read_text())


def flow_run_reference() -> tuple[str | None, str | None]:
    """(id, UI link) of the Prefect flow run doing this registration; (None, None) outside one."""
    from prefect.settings import PREFECT_UI_URL

    run_id = runtime.flow_run.id
    if not run_id:
        return None, None
    ui = PREFECT_UI_URL.value()
    return str(run_id), (f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None)


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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loss, _ = model_eval_loss(
        components["model"], tokenizer, test_blocks(blocks_dir, config), config, objective, plan_device("fp32").device
    )
    return perplexity_from_loss(loss)


def register_model(
    objective: Objective,
    model_dir: Path,
    eval_dir: Path,
    config: PipelineConfig,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, Any]:
    """Log, register, gate and describe one model version; returns what was registered."""
    import mlflow
    from mlflow import MlflowClient

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    if not math.isfinite(metrics["perplexity"]):
        raise PipelineInputError(
            f"register: {objective} perplexity is {metrics['perplexity']}; training diverged, so nothing is "
            "registered (lower train.learning_rate?)"
        )
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    name = registered_name(config, objective)
    key = registration_key(model_dir, eval_dir)

    existing = find_registered_version(client, name, key)
    if existing is not None and existing.tags.get(COMPLETE_TAG) == "true":
        log.info(f"register: {name} version {existing.version} already holds these artifacts; not adding another")
        return registration_record(client, config, objective, name, existing, metrics)

    train_metrics = json.loads((model_dir / "train_metrics.json").read_text())
    blocks_dir = Path(read_manifest(eval_dir)["inputs"]["blocks"])
    flow_run_id, flow_run_url = flow_run_reference()
    lineage = lineage_tags(
        config, objective, model_dir, blocks_dir, tokenizer_source(config, objective), flow_run_id, flow_run_url
    )
    samples = card_samples_of(eval_dir)
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
            )
        version_tags = {
            KEY_TAG: key,
            "objective": objective,
            "eval.set": metrics["eval_set"],
            "perplexity": f"{metrics['perplexity']:.4f}",
            "base_perplexity": f"{metrics['base_perplexity']:.4f}",
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


# ---------------------------------------------------------------------------- task


def register_output_dir(model_dir: str, eval_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "key": registration_key(Path(model_dir), Path(eval_dir)),
        "name": registered_name(config, objective),
        "experiment": config.registry.experiment,
        "tracking_uri": tracking_uri(config),
        "code": code_version(__file__),
    }
    return artifact_dir(config.artifacts.root, f"register-{objective}", inputs)


# Retrying is safe: a version that was already created is found again by its key and completed.
@task(
    name="register",
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_unless_input_error,
    **cached_stage(register_output_dir),
)
def register(model_dir: str, eval_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Log to MLflow, register a version and give it an alias; returns the directory holding registration.json."""
    out = register_output_dir(model_dir, eval_dir, config, objective)
    log = get_run_logger()

    # Under the artifact's lock, so two runs of the same artifacts find-or-create one version.
    def build(scratch: Path) -> None:
        registration = register_model(objective, Path(model_dir), Path(eval_dir), config, log)
        (scratch / "registration.json").write_text(json.dumps(registration, indent=2))
        publish_registration(registration)

    ensure_built(out, "register", {"model": model_dir, "eval": eval_dir}, build, log)
    return str(out)
