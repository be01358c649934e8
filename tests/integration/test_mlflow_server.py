"""Registering through a real MLflow tracking server (SQLite backend, loopback), chosen by MLFLOW_TRACKING_URI."""

from __future__ import annotations

import pytest
from pipeline_probe import registered_versions, tiny_config

from flows.clm import clm_flow
from lmpipe.cli.services import free_port, start_mlflow_server

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a free loopback port; stopped by its own process group, even if the test fails."""
    port = free_port()
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", port, tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


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
