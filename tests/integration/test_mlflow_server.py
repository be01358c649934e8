"""Registering through a real MLflow tracking server (SQLite backend, loopback), chosen by MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pipeline_probe import registered_versions, tiny_config

from flows.clm import clm_flow

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a free loopback port; stopped by its own process group, even if the test fails."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: workers die with it
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start within 120 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


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
