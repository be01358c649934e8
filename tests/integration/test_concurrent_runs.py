"""Two identical flow runs started at the same moment train once and register one version.

Two real `lmpipe run clm` processes share one artifact root, one Prefect server and one MLflow
store, as two workers picking up two scheduled runs would. To make sure they really overlap,
the test holds the download artifact's lock until both processes are waiting on it, then lets
them race through every stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pipeline_probe import PROJECT_ROOT, registered_versions, tiny_config

from lmpipe.store.locks import exclusive
from tasks.download import download_output_dir

pytestmark = pytest.mark.integration

WAITING = "another run is building it; waiting to reuse it"


class Run:
    """One `lmpipe run` process whose merged output is collected line by line as it runs."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout_s: float) -> str:
        self.process.wait(timeout_s)
        self._reader.join(10)
        return "\n".join(self.lines)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


def test_two_identical_runs_at_once_train_once_and_register_one_version(workspace):
    from prefect.settings import PREFECT_API_URL

    overrides = [f"artifacts.root={workspace / 'artifacts'}", f"registry.tracking_uri=sqlite:///{workspace}/mlflow.db"]
    command = [sys.executable, "-m", "lmpipe.cli", "run", "clm", "--config", str(PROJECT_ROOT / "configs/tiny.yaml")]
    command += [arg for override in overrides for arg in ("--set", override)]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(PROJECT_ROOT)}

    runs: list[Run] = []
    try:
        with exclusive(download_output_dir(tiny_config(workspace))):  # the same key both runs compute
            runs = [Run(command, workspace, env) for _ in range(2)]
            wait_until(lambda: all(run.saw(WAITING) for run in runs), 180, "both runs to wait on the download")
        outputs = [run.finish(300) for run in runs]
    finally:
        for run in runs:
            run.process.kill()

    for run, output in zip(runs, outputs, strict=True):
        assert run.process.returncode == 0, output[-3000:]
    combined = "\n".join(outputs)
    assert combined.count("train-clm: launching -m lmpipe.training.worker") == 1, "exactly one run trains"
    assert registered_versions(f"sqlite:///{workspace}/mlflow.db") == {"eli5-clm": [1]}
    for output in outputs:  # each run reports the one version in its summary
        summary = output[output.rindex("model ") :]
        assert "eli5-clm  1 " in summary, summary
    scratch = list((workspace / "artifacts").rglob("*.building-*"))
    assert scratch == [], f"half-written artifacts left behind: {scratch}"
