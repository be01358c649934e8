"""The temporary Prefect server a local run uses when no server is configured.

Prefect starts one itself on first use (prefect.server.api.server.SubprocessASGIServer), inside the
flow: it gives it 20 s to answer, which a busy laptop can exceed (the run then fails deep in a
Prefect traceback), and it imports the whole server application into the flow's process first
(3 s here) just to launch it. Here the same server is started the way Prefect starts it (uvicorn on
Prefect's app factory, UI off, the ephemeral set of services), but by `lmpipe run`, before the
flow's modules are imported: it boots on another core meanwhile, this process never imports the
server's code, it gets the time it needs, its output goes to a log file instead of the terminal,
it dies with the process that started it, and a server that cannot start is one line saying what
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
from pathlib import Path

import httpx

from lmpipe.compute.child_processes import die_with_parent
from lmpipe.errors import ConfigError, TemporaryServerFailed

TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's own setting, honoured here too
DEFAULT_TIMEOUT_S = 300  # Prefect's default is 20 s: too little on two loaded cores
LOG_NAME = "temporary-server.log"  # in PREFECT_HOME


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


@dataclass
class TemporaryServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def spawn(cls) -> TemporaryServer:
        """Start the server process and return at once; `wait_until_ready` waits for it."""
        import prefect
        from prefect.settings import PREFECT_HOME, get_current_settings

        # The socket is bound here and handed over (uvicorn --fd): no other process can take the port
        # between choosing it and listening on it, so any early exit is a real failure.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        log_path = Path(PREFECT_HOME.value()) / LOG_NAME
        log_path.parent.mkdir(parents=True, exist_ok=True)
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
            "--factory", "prefect.server.api.server:create_app", "--fd", str(listener.fileno()),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip
        with listener, open(log_path, "w") as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                # Its own session: a Ctrl-C at the terminal goes to the run's process group, and the server
                # must outlive the run's last calls to it (the crash report); stop() ends it after them.
                start_new_session=True,
                # Armed before the server starts: it gets SIGTERM when `lmpipe run` dies, even by SIGKILL.
                preexec_fn=die_with_parent,
            )
        return cls(process, port, log_path)

    def wait_until_ready(self, timeout_s: int) -> None:
        """Until the API answers; TemporaryServerFailed (and the process stopped) if it does not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TemporaryServerFailed(
                    f"the temporary Prefect server exited with code {self.process.returncode} before answering "
                    f"(its output: {self.log_path}); {WHAT_TO_DO}"
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TemporaryServerFailed(f"the temporary Prefect server did not answer within {timeout_s} s; {WHAT_TO_DO}")

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
def connected_to(server: TemporaryServer | None, timeout_s: int) -> Iterator[None]:
    """Inside, Prefect talks to `server` once it answers within `timeout_s` (None: to the server configured).
    What Prefect still queues for it is sent before leaving; stopping it is the caller's."""
    if server is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server.wait_until_ready(timeout_s)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        _SERVING_THIS_PROCESS_ALONE.add(server.api_url)
        try:
            yield
        finally:
            _SERVING_THIS_PROCESS_ALONE.discard(server.api_url)
            send_what_prefect_queued()


# API URLs of the temporary servers this process started: no other process talks to them.
_SERVING_THIS_PROCESS_ALONE: set[str] = set()


def serves_this_process_alone(api_url: str | None) -> bool:
    """Is `api_url` a temporary server `lmpipe run` started for this process's run alone?"""
    return api_url in _SERVING_THIS_PROCESS_ALONE


def send_what_prefect_queued(timeout_s: float = 10) -> None:
    """Logs and events Prefect still holds for the server, sent before it stops (as prefect_test_harness
    does); otherwise the run ends with "Error logging to API"."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)
