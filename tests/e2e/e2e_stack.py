"""End-to-end helpers: real processes on loopback, as a user runs them.

A Prefect server on a free port with a temporary PREFECT_HOME, an MLflow server with a temporary
SQLite registry, the work pools from deployments/, every deployment from prefect.yaml, and a
process worker on `cpu`. Each process is stopped by its own pid (and process group) at the end,
even when a test fails.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from lmpipe.cli.services import PROJECT_ROOT
from lmpipe.config.loading import load_config

# Screenshots and service logs a CI run keeps (gitignored).
TEST_ARTIFACTS = Path(os.environ.get("LMPIPE_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))


@dataclass
class Stack:
    prefect_url: str
    mlflow_url: str
    workdir: Path

    def tiny_parameters(self, *overrides: str) -> dict:
        """A seconds-long config whose artifacts live in this test session's folder."""
        config = load_config(
            PROJECT_ROOT / "configs" / "tiny.yaml", [f"artifacts.root={self.workdir / 'artifacts'}", *overrides]
        )
        return {"config": config.model_dump(mode="json")}


def wait_for_final_state(flow_run_id: UUID, timeout_s: float = 600):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"flow run {flow_run_id} still {run.state.name} after {timeout_s} s"
            time.sleep(2)
