"""Ctrl-C on `lmpipe run` during training, as a terminal sends it (SIGINT to the whole foreground process
group): the command stops within 10 s with one line and exit code 130, and leaves no Prefect server and no
training process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from pipeline_probe import lmpipe_command, registered_versions, servers_of, trainers_of

pytestmark = pytest.mark.integration


def test_ctrl_c_during_training_stops_within_10_s_and_leaves_nothing_running(workspace):
    command, env = lmpipe_command(workspace)
    # Long enough that the interrupt lands mid-training, whatever the machine's speed.
    command += ["--set", "train.max_steps=100000", "--set", "train.logging_steps=5"]
    # Its own process group, as a shell gives each foreground job: the interrupt goes to all of it.
    run = subprocess.Popen(
        command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        for line in run.stderr:
            if "train-clm: step " in line:  # training is under way
                break
            assert time.monotonic() < deadline, "training never started"
        else:
            pytest.fail(f"lmpipe run ended before training: {run.wait()}")
        os.killpg(run.pid, signal.SIGINT)
        interrupted = time.monotonic()
        rest = run.stderr.read()
        returncode = run.wait(timeout=120)
        took_s = time.monotonic() - interrupted
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert returncode == 130, rest[-3000:]
    assert rest.strip().splitlines()[-1] == "lmpipe: interrupted", rest[-3000:]
    assert took_s < 10, f"took {took_s:.1f} s to stop"
    deadline = time.monotonic() + 30  # processes already told to stop may take a moment to be reaped
    while servers_of(workspace / "prefect-home") or trainers_of(workspace):
        assert time.monotonic() < deadline, (servers_of(workspace / "prefect-home"), trainers_of(workspace))
        time.sleep(0.2)
    assert registered_versions(f"sqlite:///{workspace / 'mlflow.db'}") == {}
    assert list((workspace / "artifacts").rglob(".*.building-*")) == [], "a scratch directory was left behind"
