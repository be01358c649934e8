"""Read back what a flow run did: its task runs' states from the Prefect API, versions from MLflow."""

from __future__ import annotations

import os
import re
import sys
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
TINY_CONFIG = PROJECT_ROOT / "configs" / "tiny.yaml"
LMPIPE = Path(sys.executable).parent / "lmpipe"


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


def lmpipe_command(workspace: Path, *extra_env: tuple[str, str]) -> tuple[list[str], dict[str, str]]:
    """`lmpipe run clm` on the tiny config, as a user types it: its own Prefect home, no server configured."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(workspace / "prefect-home"), **dict(extra_env)}
    command = [
        str(LMPIPE), "run", "clm", "--config", str(TINY_CONFIG),
        "--set", f"artifacts.root={workspace / 'artifacts'}",
        "--set", f"registry.tracking_uri=sqlite:///{workspace / 'mlflow.db'}",
        "--set", "train.max_steps=2", "--set", "eval.max_blocks=4",
    ]  # fmt: skip
    return command, env


def on_the_session_server(env: dict[str, str]) -> dict[str, str]:
    """`env` for a subprocess that talks to this test session's Prefect server instead of starting a
    temporary one (10 s saved per run where the temporary server is not what is tested)."""
    from prefect.settings import PREFECT_API_URL

    return {**env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def live_processes(*command_parts: str, env_entry: str | None = None) -> list[int]:
    """Pids of live processes whose command line holds every one of `command_parts` and, if given, whose
    environment holds `env_entry` ("NAME=value")."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not all(part in cmdline for part in command_parts):
                continue
            if env_entry is not None and env_entry.encode() not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def servers_of(prefect_home: Path) -> list[int]:
    """Pids of live Prefect server processes started with this Prefect home (found by their environment)."""
    return live_processes("prefect.server.api.server:create_app", env_entry=f"PREFECT_HOME={prefect_home}")


def trainers_of(workspace: Path) -> list[int]:
    """Pids of live training processes working under this workspace."""
    return live_processes("lmpipe.training.worker", str(workspace))
