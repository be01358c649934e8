"""register: log the model to MLflow, register a version with its lineage and card, give it an alias.

Idempotent: a version made from the same artifacts is found by its key and never made twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.orchestration.flow_runs import current_flow_run
from lmpipe.orchestration.reports import publish_registration
from lmpipe.orchestration.retries import retry_unless_input_error
from lmpipe.registry.identity import registered_name, registration_key, tracking_uri
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref

LIBRARIES = ("mlflow",)  # the libraries that shape this stage's output


def register_output_dir(model_dir: str, eval_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "key": registration_key(Path(model_dir), Path(eval_dir)),
        "name": registered_name(config, objective),
        "experiment": config.registry.experiment,
        "tracking_uri": tracking_uri(config),
        "code": code_version(__name__, LIBRARIES),
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
    """Log to MLflow, register a version and give it an alias; returns the reference of the artifact holding
    registration.json."""
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.orchestration.registry_writer import registry_writer
    from lmpipe.registry.register import register_model

    model, evaluation = artifact_path(config.artifacts.root, model_dir), artifact_path(config.artifacts.root, eval_dir)

    # Under the artifact's lock (runs sharing this root) and the model's registry writer limit (any machine
    # sharing the Prefect server), so two runs of the same artifacts find-or-create one version.
    def build(scratch: Path, log: Log) -> None:
        registration = register_model(
            objective, model, evaluation, config, current_flow_run(), log, lambda name: registry_writer(name, log)
        )
        (scratch / "registration.json").write_text(json.dumps(registration, indent=2))
        publish_registration(registration)

    out = register_output_dir(model_dir, eval_dir, config, objective)
    return build_stage(out, "register", {"model": artifact_ref(model), "eval": artifact_ref(evaluation)}, build)
