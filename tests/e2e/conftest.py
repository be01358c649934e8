"""End-to-end fixtures: the stack of real services the tests in this folder run against."""

from __future__ import annotations

import pytest
from e2e_stack import TEST_ARTIFACTS, Stack

from lmpipe.cli.services import (
    create_pools_and_deploy,
    free_port,
    prefect_env,
    start_mlflow_server,
    start_prefect_server,
    start_worker,
)


@pytest.fixture(scope="module")  # module: the stack stops as soon as its tests are done
def stack(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workdir = tmp_path_factory.mktemp("e2e")
    log_dir = TEST_ARTIFACTS / "e2e-logs"
    prefect_port, mlflow_port = free_port(), free_port()
    env = prefect_env(workdir / "prefect-home", prefect_port)
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"

    services = []
    try:
        services.append(start_prefect_server(workdir / "prefect-home", prefect_port, log_dir))
        services.append(
            start_mlflow_server(f"sqlite:///{workdir / 'mlflow.db'}", workdir / "mlartifacts", mlflow_port, log_dir)
        )
        create_pools_and_deploy(env, log_dir)
        services.append(start_worker("cpu", {**env, "MLFLOW_TRACKING_URI": mlflow_url}, log_dir))
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):  # this process's client too
            yield Stack(f"http://127.0.0.1:{prefect_port}", mlflow_url, workdir)
    finally:
        for service in reversed(services):
            service.stop()
