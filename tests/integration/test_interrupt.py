"""Stopping `lmpipe run` during training, the three ways it happens:
- Ctrl-C, as a terminal sends it (SIGINT to the whole foreground process group): it stops within 10 s with
  one line and exit code 130;
- SIGTERM to the command alone (a supervisor, `kill`): it stops within 10 s with one line and exit code 143;
- SIGKILL to the command alone (the OOM killer, `kill -9`): it runs no cleanup at all.
Whichever way, no Prefect server and no training process is left behind, and nothing is registered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from pipeline_probe import lmpipe_command, registered_versions, servers_of, trainers_of

pytestmark = pytest.mark.integration


STOPS = [
    # (signal, to the whole process group?, exit code, last stderr line)
    pytest.param(signal.SIGINT, True, 130, "lmpipe: interrupted", id="ctrl-c"),
    pytest.param(signal.SIGTERM, False, 143, "lmpipe: terminated", id="sigterm"),
    pytest.param(signal.SIGKILL, False, -signal.SIGKILL, None, id="sigkill"),
]


@pytest.mark.parametrize(("sig", "to_group", "exit_code", "last_line"), STOPS)
def test_a_stopped_run_ends_within_10_s_and_leaves_nothing_running(workspace, sig, to_group, exit_code, last_line):
    command, env = lmpipe_command(workspace)
    # Long enough that the signal lands mid-training, whatever the machine's speed.
    command += ["--set", "train.max_steps=100000", "--set", "train.logging_steps=5"]
    # Its own process group, as a shell gives each foreground job: Ctrl-C goes to all of it.
    # SIGINT at its default, as in a terminal: a background job of a shell without job control (CI started
    # with `cmd &`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    run = subprocess.Popen(
        command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        for line in run.stderr:
            if "train-clm: step " in line:  # training is under way
                break
            assert time.monotonic() < deadline, "training never started"
        else:
            pytest.fail(f"lmpipe run ended before training: {run.wait()}")
        assert servers_of(workspace / "prefect-home") and trainers_of(workspace), "nothing to look for afterwards"
        if to_group:
            os.killpg(run.pid, sig)
        else:
            os.kill(run.pid, sig)
        stopped = time.monotonic()
        rest = run.stderr.read()
        returncode = run.wait(timeout=120)
        took_s = time.monotonic() - stopped
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert returncode == exit_code, rest[-3000:]
    if last_line is not None:
        assert rest.strip().splitlines()[-1] == last_line, rest[-3000:]
        assert "Traceback" not in rest, "tracebacks belong in the Prefect log, not the terminal"
    assert took_s < 10, f"took {took_s:.1f} s to stop"
    # Even after SIGKILL: the kernel tells the server and the trainer that their parent died.
    deadline = time.monotonic() + 30  # processes already told to stop may take a moment to be reaped
    while servers_of(workspace / "prefect-home") or trainers_of(workspace):
        assert time.monotonic() < deadline, (servers_of(workspace / "prefect-home"), trainers_of(workspace))
        time.sleep(0.2)
    assert registered_versions(f"sqlite:///{workspace / 'mlflow.db'}") == {}
    if sig != signal.SIGKILL:  # a SIGKILLed build's scratch is removed by the next build (tests/unit/store)
        assert list((workspace / "artifacts").rglob(".*.building-*")) == [], "a scratch directory was left behind"
