"""lmpipe.orchestration.reports: links, keys and rows of the Prefect artifacts, and no-ops outside a run."""

from __future__ import annotations

import json

from lmpipe.orchestration.reports import TrainingProgress, artifact_key, publish_registrations_table, registration_rows
from lmpipe.registry.tracking import mlflow_ui_base


def test_mlflow_links_come_from_ui_url_else_an_http_tracking_server():
    assert mlflow_ui_base("https://mlflow.example/", "sqlite:////x.db") == "https://mlflow.example"
    assert mlflow_ui_base(None, "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_ui_base(None, "sqlite:////x.db") is None


def test_artifact_keys_use_only_what_prefect_allows():
    assert artifact_key("registered", "My_Model.v2") == "registered-my-model-v2"


def test_rows_fall_back_to_ids_when_there_is_no_ui():
    registration = {
        "model_name": "m",
        "version": 2,
        "alias": "challenger",
        "base_perplexity": 10.123,
        "perplexity": 5.678,
        "run_id": "r1",
        "run_url": None,
        "version_url": None,
    }
    assert registration_rows([registration]) == [
        {
            "model": "m",
            "version": 2,
            "alias": "challenger",
            "base perplexity": 10.12,
            "perplexity": 5.68,
            "MLflow run": "r1",
            "model version": "models:/m/2",
        }
    ]


def test_outside_a_prefect_run_reports_are_skipped_without_error(tmp_path):
    (tmp_path / "registration.json").write_text(json.dumps({"model_name": "m"}))
    publish_registrations_table([str(tmp_path)], "clm")  # would need an API inside a run
    progress = TrainingProgress("train-clm")
    progress.update(5, 10)
    assert progress._enabled is False and progress._artifact_id is None  # never tried the API
