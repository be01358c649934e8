"""Many workers, one artifact volume, one Prefect server, one MLflow server: the store is portable (a root moved
to another mount point keeps its cache), its cache records travel with it (a worker with an empty PREFECT_HOME
sees every stage Cached), and two machines registering the same artifacts at once make one version."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pipeline_probe import (
    LMPIPE,
    ONE_MODEL_TASK_RUNS,
    TINY_CONFIG,
    on_the_session_server,
    registered_versions,
    task_states,
    tiny_config,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import FlowRunSort

from flows.clm import clm_flow
from lmpipe.orchestration.registry_writer import limit_name

pytestmark = pytest.mark.integration

QUICK = ("train.max_steps=2", "eval.max_blocks=4")  # every run here trains the same tiny model
ALL_CACHED = {
    stage: ["Cached"] for stage in ("download", "flatten", "tokenize", "group", "train-clm", "evaluate", "register")
}


def lmpipe_run_clm(cwd: Path, prefect_home: Path, sets: list[str]) -> subprocess.Popen:
    """`lmpipe run clm` as another worker would: its own working directory and PREFECT_HOME, the session's server."""
    import os

    cwd.mkdir(parents=True, exist_ok=True)
    env = on_the_session_server({**os.environ, "PREFECT_HOME": str(prefect_home)})
    command = [str(LMPIPE), "run", "clm", "--config", str(TINY_CONFIG), *[arg for s in sets for arg in ("--set", s)]]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(run: subprocess.Popen, timeout_s: float = 600) -> str:
    output, _ = run.communicate(timeout=timeout_s)
    assert run.returncode == 0, output[-3000:]
    return output


def newest_flow_runs(count: int) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=count)


def test_a_root_moved_to_another_mount_point_is_all_cached_and_finds_its_version(workspace):
    first = tiny_config(workspace, *QUICK)
    assert clm_flow(first, return_state=True).is_completed()

    moved = workspace / "elsewhere" / "mnt" / "artifacts"  # what a pod sees at /artifacts, a laptop at ./artifacts
    moved.parent.mkdir(parents=True)
    shutil.move(workspace / "artifacts", moved)
    config = tiny_config(workspace, *QUICK, f"artifacts.root={moved}")
    state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    assert task_states(state.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS) == ALL_CACHED
    registration = json.loads((Path(state.result()[0]) / "registration.json").read_text())
    assert registration["version"] == 1 and Path(state.result()[0]).is_relative_to(moved)
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
    assert not (workspace / "artifacts").exists()
    manifests = "\n".join(p.read_text() for p in moved.glob("*/*/artifact.json"))
    assert str(workspace / "artifacts") not in manifests, "a manifest names its inputs by reference, not by path"


def test_a_worker_with_an_empty_prefect_home_sees_every_stage_cached(workspace):
    """The second worker has never run anything: no result records of its own. The records are on the volume."""
    sets = [f"artifacts.root={workspace / 'artifacts'}", f"registry.tracking_uri=sqlite:///{workspace / 'mlflow.db'}"]
    finished(lmpipe_run_clm(workspace / "laptop", workspace / "laptop-prefect-home", [*sets, *QUICK]))
    assert (workspace / "artifacts" / ".prefect-results").is_dir()

    finished(lmpipe_run_clm(workspace / "pod", workspace / "pod-prefect-home", [*sets, *QUICK]))
    (second,) = newest_flow_runs(1)
    assert task_states(second.id, runs=ONE_MODEL_TASK_RUNS) == ALL_CACHED
    assert registered_versions(f"sqlite:///{workspace / 'mlflow.db'}") == {"eli5-clm": [1]}
    for home in ("laptop-prefect-home", "pod-prefect-home"):
        stored = workspace / home / "storage"
        assert not stored.exists() or not any(stored.glob("lmpipe-*")), f"a record was kept in {home}"


def test_two_machines_registering_the_same_artifacts_at_once_make_one_version_and_one_champion(
    workspace, mlflow_server
):
    """Two copies of the store (so no shared lock file), one Prefect server, one MLflow server, a new model name:
    both runs find every stage Cached but register, and reach register together. One writer at a time."""
    tracking = f"registry.tracking_uri={mlflow_server}"
    assert clm_flow(tiny_config(workspace, *QUICK, tracking), return_state=True).is_completed()
    for machine in ("a", "b"):  # cp -a keeps the files' times, as a copied volume would
        subprocess.run(["cp", "-a", str(workspace / "artifacts"), str(workspace / f"root-{machine}")], check=True)

    model = "shared-clm"
    runs = [
        lmpipe_run_clm(
            workspace / f"machine-{machine}",
            workspace / f"home-{machine}",
            [f"artifacts.root={workspace / f'root-{machine}'}", tracking, *QUICK, f"registry.clm_model_name={model}"],
        )
        for machine in ("a", "b")
    ]
    outputs = [finished(run) for run in runs]

    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions(f"name = '{model}'")
    assert [v.version for v in versions] == ["1"], outputs
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert {v.tags["lmpipe.alias"] for v in versions} == {"champion"}
    registrations = [
        json.loads(next((workspace / f"root-{m}" / "register-clm").glob("*/registration.json")).read_text())
        for m in ("a", "b")
    ]
    assert [r["version"] for r in registrations] == [1, 1]
    with get_client(sync_client=True) as prefect:
        guard = prefect.read_global_concurrency_limit_by_name(limit_name(model))
    assert (guard.limit, guard.active_slots) == (1, 0), "one slot, given back by both"


def test_the_registry_writer_limit_is_created_with_one_slot_and_put_back_to_one_if_changed():
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from lmpipe.orchestration.registry_writer import registry_writer

    name = limit_name("writer-limit-test")
    with registry_writer("writer-limit-test"):  # created when missing; held inside
        with get_client(sync_client=True) as client:
            held = client.read_global_concurrency_limit_by_name(name)
            assert (held.limit, held.active, held.active_slots) == (1, True, 1)
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0, "given back on the way out"
        # Someone widens it, or switches it off: either would let two writers in at once.
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=3, active=False))
    with registry_writer("writer-limit-test"):
        with get_client(sync_client=True) as client:
            restored = client.read_global_concurrency_limit_by_name(name)
            assert (restored.limit, restored.active, restored.active_slots) == (1, True, 1)
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0


def test_a_writer_that_cannot_get_the_slot_fails_in_one_line_naming_the_slot_to_free(monkeypatch):
    """What a run sees when a killed registration's slot is never taken back (a server without its services)."""
    from lmpipe.orchestration import registry_writer as writer

    monkeypatch.setattr(writer, "WAIT_S", 3.0)
    with writer.registry_writer("busy-test"):  # the holder that never lets go
        with pytest.raises(writer.RegistryBusy) as refused:
            with writer.registry_writer("busy-test"):
                pytest.fail("two writers of one model at once")
    message = str(refused.value)
    assert "\n" not in message and "prefect gcl update lmpipe-register-busy-test --active-slots 0" in message
