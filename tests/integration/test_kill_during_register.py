"""SIGKILL of `lmpipe run` while it sets up a new MLflow store or registers into it: every re-run succeeds,
with exactly one version.

The issue's report: a kill about 5 s into the first register against a new SQLite store landed in
MLflow's schema creation, and every later run failed with "table mcp_servers already exists". The
store is now created by the pre-flight, whole or not at all, and register never changes a schema.
Each kill point gets a new store (the register stage's key holds the tracking URI, so register runs
again while every other stage is cached from the first complete run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pipeline_probe import lmpipe_command, registered_versions

pytestmark = pytest.mark.integration


def with_store(command: list[str], db: Path) -> list[str]:
    return [*command, "--set", f"registry.tracking_uri=sqlite:///{db}"]  # the last --set wins


def kill_when(command: list[str], env: dict[str, str], workspace: Path, appears: str, after_s: float) -> None:
    """Start the command, SIGKILL it `after_s` seconds after a path matching `appears` shows up under
    the workspace, and check it was killed (not finished)."""
    run = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not any(workspace.glob(appears)):
            assert run.poll() is None, f"the run ended (exit {run.returncode}) before {appears} appeared"
            assert time.monotonic() < deadline, f"{appears} never appeared"
            time.sleep(0.01)
        time.sleep(after_s)
        run.send_signal(signal.SIGKILL)
    finally:
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, f"the run finished (exit {run.returncode}) before the kill"


def rerun_succeeds_with_one_version(command: list[str], env: dict[str, str], workspace: Path, db: Path) -> None:
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert registered_versions(f"sqlite:///{db}") == {"eli5-clm": [1]}


def test_a_kill_during_store_creation_or_first_register_never_breaks_a_rerun(workspace):
    # Each run starts its own temporary Prefect server, killed with it, as `lmpipe run` does on a laptop. Not
    # the session's server: that one runs no background services, so the registry writer slot (a lease) of a
    # run killed inside register would never be taken back there (lmpipe/orchestration/registry_writer.py).
    command, env = lmpipe_command(workspace)
    kill_points = [
        # (store, what must appear before the kill, seconds after it)
        ("mlflow-1.db", ".mlflow-1.db.creating-*", 0.3),  # inside MLflow's schema creation, in the pre-flight
        ("mlflow-2.db", "artifacts/register-clm/.*.building-*", 0.5),  # register has just begun
        ("mlflow-3.db", "artifacts/register-clm/.*.building-*", 3.0),  # logging the model, or registering it
    ]
    for store, appears, after_s in kill_points:
        db = workspace / store
        kill_when(with_store(command, db), env, workspace, appears, after_s)
        rerun_succeeds_with_one_version(with_store(command, db), env, workspace, db)
        assert not list(workspace.glob(f".{store}.creating-*")), "the killed creation's scratch file is gone"

    assert not list((workspace / "artifacts").rglob(".*.building-*")), "the next builds removed the killed scratch"
    assert os.listdir(workspace / "artifacts" / "register-clm")
