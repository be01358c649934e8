"""`make serve` (python -m lmpipe.cli.serve): everything comes up on loopback and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from lmpipe.cli.services import PROJECT_ROOT, free_port

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_prints_both_urls_and_stops_everything_on_ctrl_c(tmp_path):
    prefect_port, mlflow_port = free_port(), free_port()
    output = tmp_path / "serve.out"
    command = [sys.executable, "-m", "lmpipe.cli.serve", "--prefect-port", str(prefect_port),
               "--mlflow-port", str(mlflow_port), "--prefect-home", str(tmp_path / "prefect-home"),
               "--mlflow-dir", str(tmp_path)]  # fmt: skip
    with open(output, "w") as sink:
        serve = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    pids_file = tmp_path / "prefect-home" / "serve-logs" / "pids"
    children: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while "Press Ctrl-C" not in output.read_text():
            assert serve.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, f"serve did not come up:\n{output.read_text()[-3000:]}"
            time.sleep(1)
        text = output.read_text()
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in text
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in text
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=10).status_code == 200
        children = [int(line.split()[-1]) for line in pids_file.read_text().splitlines()]
        assert len(children) == 3  # Prefect server, MLflow server, cpu worker

        serve.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert serve.wait(timeout=90) == 0
        assert output.read_text().rstrip().endswith("stopped.")
        assert [pid for pid in children if alive(pid)] == [], "a service outlived make serve"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=2)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        for pid in children:  # each service leads its own process group
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
