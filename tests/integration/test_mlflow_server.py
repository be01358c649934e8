"""Registering through a real MLflow tracking server (SQLite backend, loopback), chosen by MLFLOW_TRACKING_URI."""

from __future__ import annotations

import pytest
from pipeline_probe import registered_versions, tiny_config

from flows.clm import clm_flow

pytestmark = pytest.mark.integration


def test_register_through_a_tracking_server_named_by_the_environment(workspace, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    config = tiny_config(workspace, "registry.tracking_uri=null")  # fall back to the environment

    state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    assert registered_versions(mlflow_server) == {"eli5-clm": [1]}
    assert not (workspace / "mlflow.db").exists(), "the environment's server must win over the SQLite default"

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    generator = mlflow.transformers.load_model("models:/eli5-clm/1")  # artifacts served by the server
    assert generator("The", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("The")
