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


# Task runs each flow creates when it runs to the end: download, flatten, tokenize, group, train,
# evaluate, register. The both flow downloads and flattens once, then runs the rest per objective
# (the second tokenize and group are cache hits): 2 + 2 * 5.
ONE_MODEL_TASK_RUNS = 7
BOTH_MODELS_TASK_RUNS = 12


def task_states(flow_run_id: UUID, *, runs: int, timeout_s: float = 60) -> dict[str, list[str]]:
    """{'download': ['Cached'], 'tokenize': ['Completed', 'Cached'], ...} in run order.

    Task runs reach the server as events, which it records after the flow run's own final state
    (seen in CI: a run's two register task runs were missing when read). So this waits, bounded,
    until the `runs` task runs the caller expects are all there and none is still pending or running.
    """
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout_s)  # this process's events sent; the server may still be recording
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            names = [run.state_name for run in found]
            if len(found) >= runs and not {"Pending", "Running", "Scheduled", None} & set(names):
                break
            assert time.monotonic() < deadline, (
                f"expected {runs} final task runs within {timeout_s} s, found {len(found)}: {names}"
            )
            time.sleep(0.5)
    assert len(found) == runs, f"expected {runs} task runs, found {len(found)}: {[r.name for r in found]}"
    states: dict[str, list[str]] = defaultdict(list)
    for run in found:
        task_name = re.sub(r"-[0-9a-f]{3}$", "", run.name)  # 'train-clm-4a2' -> 'train-clm'
        states[task_name].append(run.state_name)
    return dict(states)


def registered_versions(tracking_uri: str) -> dict[str, list[int]]:
    client = MlflowClient(tracking_uri)
    return {
        model.name: sorted(int(v.version) for v in client.search_model_versions(f"name = '{model.name}'"))
        for model in client.search_registered_models()
    }
