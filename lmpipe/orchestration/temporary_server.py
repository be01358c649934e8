"""The temporary Prefect server a local run uses when no server is configured.

Prefect starts one itself on first use (prefect.server.api.server.SubprocessASGIServer), inside the
flow: it gives it 20 s to answer, which a busy laptop can exceed (the run then fails deep in a
Prefect traceback), and it imports the whole server application into the flow's process first
(3 s here) just to launch it. Here the same server is started the way Prefect starts it (uvicorn on
Prefect's app factory, UI off, the ephemeral set of services), but by `lmpipe run`, before the
flow's modules are imported: it boots on another core meanwhile, this process never imports the
server's code, it gets the time it needs, and a server that cannot start is one line saying what
to do instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from lmpipe.errors import ConfigError, TemporaryServerFailed

TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's own setting, honoured here too
DEFAULT_TIMEOUT_S = 300  # Prefect's default is 20 s: too little on two loaded cores
PORT_IN_USE = 3  # uvicorn's exit code when its port was taken meanwhile: try another


def startup_timeout_s() -> int:
    """The wait for the temporary server; checked before Prefect reads the same variable (and fails with a
    page of validation errors on a value that is not a whole number)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${TIMEOUT_ENV}={raw!r} is not a whole number of seconds") from None


def needs_temporary_server() -> bool:
    """No Prefect server configured (PREFECT_API_URL, in the environment or the Prefect profile), and
    Prefect would start a temporary one."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class TemporaryServer:
    process: subprocess.Popen
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def spawn(cls) -> TemporaryServer:
        """Start the server process and return at once; `wait_until_ready` waits for it."""
        import prefect
        from prefect.settings import get_current_settings

        port = free_port()
        env = {
            **os.environ,
            # As Prefect's SubprocessASGIServer runs it: no UI, the services an ephemeral server runs.
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        command = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip
        return cls(subprocess.Popen(command, env=env), port)

    def wait_until_ready(self, timeout_s: float) -> None:
        """Until the API answers; TemporaryServerFailed (and the process stopped) if it does not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() == PORT_IN_USE:
                replacement = TemporaryServer.spawn()
                self.process, self.port = replacement.process, replacement.port
            elif self.process.poll() is not None:
                self.stop()
                raise TemporaryServerFailed(
                    f"the temporary Prefect server exited with code {self.process.returncode} before answering; "
                    + WHAT_TO_DO
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TemporaryServerFailed(
            f"the temporary Prefect server did not answer within {timeout_s:g} s; " + WHAT_TO_DO
        )

    def stop(self, grace_s: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


WHAT_TO_DO = (
    f"raise ${TIMEOUT_ENV}, or start a server once (`make serve`, or `prefect server start`) and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api"
)


@contextmanager
def prefect_api(server: TemporaryServer | None, timeout_s: int) -> Iterator[None]:
    """Inside, Prefect talks to `server` (None: to the one configured), once it answers within `timeout_s`;
    the server stops on the way out."""
    if server is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        server.wait_until_ready(timeout_s)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                send_what_prefect_queued()
    finally:
        server.stop()


def send_what_prefect_queued(timeout_s: float = 10) -> None:
    """Logs and events Prefect still holds for the server, sent before it stops (as prefect_test_harness
    does); otherwise the run ends with "Error logging to API"."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)
