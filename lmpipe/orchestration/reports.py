"""What the Prefect UI shows about a run: a registration table per flow run, its registrations, training progress.

Artifacts are reports: failing to publish one is logged, never allowed to fail the run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def registration_rows(registrations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "model": r["model_name"],
            "version": r["version"],
            "alias": r.get("alias", "none"),
            "base perplexity": round(r["base_perplexity"], 2),
            "perplexity": round(r["perplexity"], 2),
            "MLflow run": r.get("run_url") or r["run_id"],
            "model version": r.get("version_url") or f"models:/{r['model_name']}/{r['version']}",
        }
        for r in registrations
    ]


def publish_registrations_table(registration_dirs: list[str], flow_name: str) -> None:
    """One table per flow run: model, version, alias, perplexity before and after, MLflow links.

    Called by every flow run, cached or not, so each run's page says what is in the registry.
    """
    registrations = [json.loads((Path(d) / "registration.json").read_text()) for d in registration_dirs]
    if not _in_prefect_run():
        return
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(
            registration_rows(registrations),
            key=artifact_key("registrations", flow_name),
            description="Model versions this flow run handed to MLflow for review (perplexity: lower is better).",
        )
    except Exception as error:  # noqa: BLE001 - a report must never fail the run
        _log.warning(f"could not publish the registration table: {error}")


def publish_registration(registration: dict[str, Any]) -> None:
    """The register task's own note: version, alias and why, with the links."""
    if not _in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    links = (
        " · ".join(
            f"[{label}]({url})"
            for label, url in (
                ("MLflow run", registration.get("run_url")),
                ("model version", registration.get("version_url")),
            )
            if url
        )
        or f"run `{registration['run_id']}` in `{registration['tracking_uri']}`"
    )
    try:
        create_markdown_artifact(
            key=artifact_key("registered", registration["model_name"]),
            description=f"MLflow registration of {registration['model_name']}",
            markdown=(
                f"### {registration['model_name']} v{registration['version']}: {registration['alias']}\n\n"
                f"{registration['alias_reason']}\n\n"
                f"| base perplexity | perplexity |\n|---|---|\n"
                f"| {registration['base_perplexity']:,.2f} | {registration['perplexity']:,.2f} |\n\n{links}\n"
            ),
        )
    except Exception as error:  # noqa: BLE001 - a report must never fail the run
        _log.warning(f"could not publish the registration note: {error}")


class TrainingProgress:
    """A Prefect progress artifact (0-100 %) that follows the training steps; a no-op outside a run."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._artifact_id = None
        self._enabled = _in_prefect_run()

    def update(self, step: int, max_steps: int) -> None:
        if not self._enabled or max_steps <= 0:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = min(100.0, 100.0 * step / max_steps)
        description = f"{self.label}: step {step} of {max_steps}"
        try:
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(
                    percent, key=artifact_key(self.label, "progress"), description=description
                )
            else:
                update_progress_artifact(self._artifact_id, percent, description=description)
        except Exception as error:  # noqa: BLE001 - a report must never stop training
            _log.warning(f"{self.label}: could not update the progress artifact ({error}); not trying again")
            self._enabled = False
