"""Which MLflow tracking server (or local store) the pipeline talks to, and its experiment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def resolve_tracking_uri(explicit: str | None) -> str:
    """registry.tracking_uri if set, else $MLFLOW_TRACKING_URI, else a SQLite store in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def experiment_id_for(client: Any, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if not uri.startswith("sqlite:///"):
        return client.create_experiment(name)  # a tracking server decides where artifacts go
    # Next to the database, absolute: a SQLite store otherwise puts artifacts relative to
    # whatever directory the process happens to run in.
    artifact_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return client.create_experiment(name, artifact_location=artifact_root.resolve().as_uri())


def mlflow_ui_base(ui_url: str | None, tracking_uri: str) -> str | None:
    """Where the MLflow UI lives: registry.ui_url, else an http(s) tracking server; None for a local store."""
    base = ui_url or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    return base.rstrip("/") if base else None
