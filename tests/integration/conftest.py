"""Integration fixtures: a real (temporary) Prefect server, a temporary MLflow SQLite store, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmpipe.cli.offline import apply_offline_defaults

apply_offline_defaults()

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    """One temporary Prefect server (real API and database) for the whole integration session."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh artifact root and MLflow store per test; the run's working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` (SQLite backend) on a free loopback port; stopped by its own process group, even if the
    test fails. Yields its URL."""
    from lmpipe.cli.services import free_port, start_mlflow_server

    port = free_port()
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", port, tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
