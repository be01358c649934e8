"""download and register retry transient errors with backoff; the run then completes with one version.

register's outage is real: the tracking URI points at a TCP relay in front of a real MLflow server,
and the relay resets every connection for a few seconds from the moment register begins (the
pre-flight has found the server up), as a restarting server or a flapping load balancer would.
download's fault is injected: this machine has no network to lose, so the corpus loader raises
ConnectionError once, the way a dropped Hub download surfaces. Retries are Prefect's own; training
has none (it resumes instead).
"""

from __future__ import annotations

import socket
import threading
import time
from uuid import UUID

import pytest
from mlflow import MlflowClient
from pipeline_probe import ONE_MODEL_TASK_RUNS, registered_versions, task_states, tiny_config
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import lmpipe.data.download
import lmpipe.registry.register
from flows.clm import clm_flow
from lmpipe.cli.services import free_port, start_mlflow_server
from lmpipe.registry.register import COMPLETE_TAG

pytestmark = pytest.mark.integration


RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a TCP reset


class FlakyRelay:
    """Relays TCP to `target_port`; from `start_outage()` on, for `outage_s` seconds, it resets every
    connection, the open ones (a client's keep-alive pool) and every new one."""

    def __init__(self, target_port: int, outage_s: float) -> None:
        self.target_port, self.outage_s = target_port, outage_s
        self.reset_connections = 0
        self._outage_ends = 0.0
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def start_outage(self) -> None:
        self._outage_ends = time.monotonic() + self.outage_s
        for client in self._open:
            self._reset(client)
        self._open.clear()

    def _reset(self, client: socket.socket) -> None:
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            client.close()  # the client sees "connection reset by peer"
            self.reset_connections += 1
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if time.monotonic() < self._outage_ends:
                self._reset(client)
                continue
            self._open.append(client)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def run_counts(flow_run_id: UUID) -> dict[str, int]:
    """How many times each task ran (1 + retries) in one flow run, from the Prefect API."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.run_count for run in runs}


@pytest.fixture
def mlflow_server(workspace):
    port = free_port()
    server = start_mlflow_server(
        f"sqlite:///{workspace / 'server.db'}", workspace / "server-artifacts", port, workspace
    )
    yield port
    server.stop()


def test_download_and_register_retry_transient_errors_and_the_run_completes(workspace, mlflow_server, monkeypatch):
    relay = FlakyRelay(mlflow_server, outage_s=3)  # register retries after 5 s: past the outage
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # let the task's retry meet the outage
    failures = {"download": 0}
    real_source_batches = lmpipe.data.download.source_batches

    def source_batches_failing_once(*args, **kwargs):
        if failures["download"] == 0:
            failures["download"] += 1
            raise ConnectionError("Connection reset by peer while fetching the corpus")
        return real_source_batches(*args, **kwargs)

    monkeypatch.setattr(lmpipe.data.download, "source_batches", source_batches_failing_once)
    # The outage starts as register begins: the pre-flight has already found the server up.
    real_register_model = lmpipe.registry.register.register_model

    def register_model_in_an_outage(*args, **kwargs):
        if relay.reset_connections == 0:
            relay.start_outage()
        return real_register_model(*args, **kwargs)

    monkeypatch.setattr(lmpipe.registry.register, "register_model", register_model_in_an_outage)
    uri = f"http://127.0.0.1:{relay.port}"
    try:
        state = clm_flow(tiny_config(workspace, f"registry.tracking_uri={uri}"), return_state=True)
    finally:
        relay.close()

    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    assert set(sum(task_states(flow_run_id, runs=ONE_MODEL_TASK_RUNS).values(), [])) == {"Completed"}
    counts = run_counts(flow_run_id)
    assert counts["download"] == 2 and failures["download"] == 1
    assert counts["register"] >= 2 and relay.reset_connections >= 1, (counts, relay.reset_connections)
    assert counts["train-clm"] == 1, "training is never retried"
    assert registered_versions(f"http://127.0.0.1:{mlflow_server}") == {"eli5-clm": [1]}
    version = MlflowClient(f"http://127.0.0.1:{mlflow_server}").get_model_version("eli5-clm", "1")
    assert version.tags[COMPLETE_TAG] == "true"
