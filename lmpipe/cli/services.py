"""Start, wait for and stop the real local services: Prefect server, Prefect worker, MLflow server.

Used by `make serve` and by the end-to-end tests alike. Each service runs in its own process
group, so stopping it (by its own pid) also stops whatever it spawned (uvicorn workers, flow
runs), and nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from lmpipe.cli.offline import OFFLINE_DEFAULTS  # local services are private and offline too

BIN = Path(sys.executable).parent  # the virtualenv's console scripts: prefect, mlflow, lmpipe
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path
    _log: IO[str]

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM the service's process group, then SIGKILL what is left after `grace_s`."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)  # children that outlived their parent
        self._log.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(name: str, command: list[str], env: dict[str, str], log_dir: Path, cwd: Path = PROJECT_ROOT) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **OFFLINE_DEFAULTS, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() reaches its children too
    )
    return Service(name, process, log_path, log)


def wait_for_http(service: Service, url: str, timeout_s: float = 120) -> None:
    """Until `url` answers 200; fail early, with the log, if the service dies. A service that never
    comes up is stopped before the error is raised, so no caller is left holding a stray process."""
    try:
        _poll_http(service, url, timeout_s)
    except BaseException:
        service.stop()
        raise


def _poll_http(service: Service, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service.name} did not answer {url} within {timeout_s:.0f} s:\n{service.log_tail()}")
        time.sleep(1)


# ---------------------------------------------------------------------------- the services


def prefect_env(prefect_home: Path, port: int) -> dict[str, str]:
    api = f"http://127.0.0.1:{port}/api"
    # The UI calls the API at port 4200 unless told where the server really is.
    return {"PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api}


def start_prefect_server(prefect_home: Path, port: int, log_dir: Path) -> Service:
    env = prefect_env(prefect_home, port)
    server = start(
        "prefect-server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log_dir,
    )
    wait_for_http(server, f"http://127.0.0.1:{port}/api/health")
    return server


def start_mlflow_server(backend_uri: str, artifacts: Path, port: int, log_dir: Path) -> Service:
    command = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
    ]
    server = start("mlflow-server", command, {}, log_dir)
    wait_for_http(server, f"http://127.0.0.1:{port}/health")
    return server


def create_pools_and_deploy(env: dict[str, str], log_dir: Path) -> None:
    """`lmpipe pool create deployments/*.yaml`, then `prefect deploy --all` from prefect.yaml."""
    pools = sorted(str(p) for p in (PROJECT_ROOT / "deployments").glob("*.yaml"))
    # prefect.yaml's pull step records $PWD: the project folder the worker runs flows from.
    command_env = {**os.environ, **OFFLINE_DEFAULTS, **env, "PWD": str(PROJECT_ROOT)}
    create_pools = [str(BIN / "lmpipe"), "pool", "create", *pools]
    deploy = [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"]
    for command in (create_pools, deploy):
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=command_env, capture_output=True, text=True, timeout=300)
        (log_dir / f"{Path(command[0]).name}-{command[1]}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def start_worker(pool: str, env: dict[str, str], log_dir: Path) -> Service:
    return start(f"worker-{pool}", [str(BIN / "prefect"), "worker", "start", "--pool", pool], env, log_dir)
