"""`lmpipe run` with no Prefect server configured: it starts Prefect's temporary server itself, gives
it the time it needs on a loaded machine, and when the server cannot start says so in one line,
leaving no server process behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_probe import lmpipe_command, registered_versions, servers_of

pytestmark = pytest.mark.integration


def lmpipe_run(workspace: Path, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
    command, env = lmpipe_command(workspace, *extra_env)
    return subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)


def lmpipe_run_started(workspace: Path) -> subprocess.Popen:
    """The same, started: its output (stdout and stderr) read line by line as it comes."""
    command, env = lmpipe_command(workspace)
    return subprocess.Popen(
        command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_server_that_cannot_start_in_time_is_one_line_and_leaves_nothing_running(workspace):
    finished = lmpipe_run(workspace, ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "1"))
    assert finished.returncode == 1, finished.stdout[-2000:] + finished.stderr[-2000:]
    last_line = finished.stderr.strip().splitlines()[-1]
    assert last_line.startswith("lmpipe: the temporary Prefect server did not answer within 1 s;"), last_line
    assert "make serve" in last_line and "PREFECT_API_URL" in last_line
    assert "Traceback" not in finished.stderr
    assert servers_of(workspace / "prefect-home") == []
    assert not (workspace / "artifacts").exists(), "nothing starts before the server answers"
    assert registered_versions(f"sqlite:///{workspace / 'mlflow.db'}") == {}


def test_a_run_completes_when_the_machine_is_loaded_while_its_server_starts(workspace):
    """Both cores busy with other work from the moment `lmpipe run` starts until its flow begins: the wait
    for the temporary server, where Prefect's own 20 s limit failed busy laptops."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        run = lmpipe_run_started(workspace)
        output = []
        for line in run.stdout:  # until the flow begins: the server is up
            output.append(line)
            if "Beginning flow run" in line:
                break
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    rest, _ = run.communicate(timeout=600)
    output.append(rest)
    text = "".join(output)
    assert run.returncode == 0, text[-3000:]
    assert "Beginning flow run" in text and "eli5-clm  1" in text
    assert "Error logging to API" not in text  # logs were sent before the server stopped
    assert servers_of(workspace / "prefect-home") == []
