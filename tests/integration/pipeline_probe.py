"""Read back what a flow run did: its task runs' states from the Prefect API, versions from MLflow."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path
from uuid import UUID

from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from lmpipe.config.loading import load_config
from lmpipe.config.schema import PipelineConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def tiny_config(workspace: Path, *overrides: str) -> PipelineConfig:
    """configs/tiny.yaml with its artifacts and MLflow store inside the test's workspace."""
    return load_config(
        PROJECT_ROOT / "configs" / "tiny.yaml",
        [
            f"artifacts.root={workspace / 'artifacts'}",
            f"registry.tracking_uri=sqlite:///{workspace / 'mlflow.db'}",
            *overrides,
        ],
    )


def task_states(flow_run_id: UUID, timeout_s: float = 60) -> dict[str, list[str]]:
    """{'download': ['Cached'], 'tokenize': ['Completed', 'Cached'], ...} in run order.

    Task-run states reach the server as events and can trail the flow run's own final state, so
    this waits (bounded) until none is still pending or running.
    """
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            names = [run.state_name for run in runs]
            if runs and not {"Pending", "Running", "Scheduled", None} & set(names):
                break
            assert time.monotonic() < deadline, f"task runs still not final after {timeout_s} s: {names}"
            time.sleep(0.5)
    states: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        task_name = re.sub(r"-[0-9a-f]{3}$", "", run.name)  # 'train-clm-4a2' -> 'train-clm'
        states[task_name].append(run.state_name)
    return dict(states)


def registered_versions(tracking_uri: str) -> dict[str, list[int]]:
    client = MlflowClient(tracking_uri)
    return {
        model.name: sorted(int(v.version) for v in client.search_model_versions(f"name = '{model.name}'"))
        for model in client.search_registered_models()
    }
