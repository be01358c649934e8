"""Training across nodes with Ray Train, for real: a Ray cluster of two nodes on this machine (two raylets,
`ray.cluster_utils.Cluster`, one CPU each, so two 1-CPU workers can only run one per node), the train task's
own launcher, gloo.

- a 2-worker run is spread over both nodes, and trains as a 2-rank torchrun run does, step by step;
- the flow trains on the cluster and registers a version;
- losing the worker node mid-run fails the run with one line naming the lost rank, and the re-run resumes
  from the last checkpoint;
- a cluster that is not there fails in seconds, with one line naming train.ray_address.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from pipeline_probe import live_processes, registered_versions, tiny_config
from test_distributed import DIVERGING, STEP_TOLERANCE, STEPS, losses, start_job, start_task_process, train

from flows.clm import clm_flow
from lmpipe.errors import PipelineInputError, TrainingFailed

ray = pytest.importorskip("ray", reason="the Ray tests need the project's test install (ray[train])")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

RANKS_LINE = re.compile(r"(\d+) Ray Train workers on (\d+) nodes: (.*)")


@pytest.fixture(scope="module")
def cluster():
    """Two nodes on this machine: the head and one worker node, one CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger("tests.ray")
    logger.setLevel(logging.INFO)
    return logger


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def on_ray(cluster: Cluster, *extra: str) -> tuple[str, ...]:
    return ("train.launcher=ray", f"train.ray_address={cluster.address}", "train.ray_workers=2", *extra)


def test_two_workers_spread_over_both_nodes_and_train_as_two_torchrun_ranks(workspace, cluster, log):
    same = ("model.clm.dropout=0.0", "train.precision=fp32")
    torchrun_job, torchrun_file, torchrun_out = start_job(workspace, "torchrun", "clm", 2, 4, *same)
    train(torchrun_job, torchrun_file, torchrun_out, log)

    lines = Lines()
    log.addHandler(lines)
    try:
        ray_job, ray_file, ray_out = start_job(workspace, "ray", "clm", 2, 4, *same, *on_ray(cluster))
        train(ray_job, ray_file, ray_out, log)
    finally:
        log.removeHandler(lines)
    placed = [match for line in lines.lines if (match := RANKS_LINE.search(line))]
    assert placed, lines.lines
    workers, nodes, ranks = placed[0].groups()
    assert (workers, nodes) == ("2", "2"), ranks
    node_ids = re.findall(r"on node (\w+)", ranks)
    assert len(set(node_ids)) == 2, f"the two workers share a node: {ranks}"

    on_torchrun, on_ray_train = losses(torchrun_out), losses(ray_out)
    assert len(on_ray_train) == len(on_torchrun) == STEPS
    worst = max(abs(a - b) / a for a, b in zip(on_torchrun, on_ray_train, strict=True))
    assert worst < STEP_TOLERANCE, (worst, on_torchrun, on_ray_train)  # the issue asks 2%; both are DDP on 2 ranks
    metrics = json.loads((ray_out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train_steps"] == STEPS


def test_the_flow_trains_on_the_cluster_and_registers_a_version(workspace, cluster, caplog):
    config = tiny_config(workspace, *on_ray(cluster), "train.max_steps=4", "eval.max_blocks=4")
    with caplog.at_level(logging.INFO):
        state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
    for path in state.result():
        assert json.loads((Path(path) / "registration.json").read_text())["perplexity"] > 0
    assert any(RANKS_LINE.search(record.getMessage()) for record in caplog.records), "no placement in the task log"


def test_the_loss_guard_stops_every_worker_with_the_one_line_input_error(workspace, cluster, log):
    job, job_file, out_dir = start_job(workspace, "diverged", "clm", 2, 4, *on_ray(cluster), *DIVERGING)
    with pytest.raises(PipelineInputError) as caught:
        train(job, job_file, out_dir, log)
    message = str(caught.value)
    assert message.startswith("training diverged: loss is ") and "lower train.learning_rate=1e+06?" in message, message
    assert not (out_dir / "model.safetensors").exists()


def test_a_dead_cluster_fails_the_training_in_seconds_naming_the_address(workspace, log):
    job, job_file, out_dir = start_job(
        workspace, "dead", "clm", 2, 4, "train.launcher=ray", "train.ray_address=127.0.0.1:1"
    )
    started = time.monotonic()
    with pytest.raises(TrainingFailed) as caught:
        train(job, job_file, out_dir, log)
    assert time.monotonic() - started < 60  # the driver's start included; Ray's own ray.init waits minutes
    assert str(caught.value) == (
        "train-test: cannot reach the Ray cluster: train.ray_address='127.0.0.1:1': no Ray cluster answers at "
        "127.0.0.1:1"
    )


def test_no_worker_outlives_a_sigkilled_task(workspace, cluster):
    job, job_file, out_dir = start_job(workspace, "orphans", "clm", 2, 4, *on_ray(cluster), "train.max_steps=100000")
    process = start_task_process(job, job_file, out_dir)
    try:
        deadline = time.monotonic() + 300
        while len(live_processes("ray::RayTrainWorker")) < 2:
            assert process.poll() is None, "the task ended before its workers started"
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        killed = time.monotonic()

        def left() -> list[int]:
            return live_processes("ray::RayTrainWorker") + live_processes("lmpipe.training.ray_train", str(job_file))

        while left():
            assert time.monotonic() - killed < 30, f"outlived their SIGKILLed task by 30 s: {left()}"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()


def test_losing_the_worker_node_fails_the_run_naming_the_rank_and_the_rerun_resumes(workspace, cluster, log):
    """Last in this file: it takes a node away from the module's cluster (and puts one back)."""
    job, job_file, out_dir = start_job(workspace, "lost", "clm", 2, 4, *on_ray(cluster), "train.max_steps=200")
    checkpoints = Path(job.checkpoint_dir)
    worker_node = next(node for node in cluster.worker_nodes)
    removed_at: list[float] = []

    def remove_the_worker_node_after_a_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(checkpoints.glob("checkpoint-*")):
            time.sleep(0.05)
        cluster.remove_node(worker_node)
        removed_at.append(time.monotonic())

    remover = threading.Thread(target=remove_the_worker_node_after_a_checkpoint)
    remover.start()
    try:
        with pytest.raises(TrainingFailed) as caught:
            train(job, job_file, out_dir, log)
    finally:
        remover.join()
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    failed_after_s = time.monotonic() - removed_at[0]
    message = str(caught.value)
    assert "\n" not in message
    lost = r"train-test: Ray Train worker rank \d of 2 was lost: its node (\w+) \([\d.]+\) left the cluster; then "
    assert (found := re.match(lost, message)), message
    assert worker_node.node_id.startswith(found.group(1)), (worker_node.node_id, message)
    assert failed_after_s < 60, f"{failed_after_s:.0f} s to notice the lost node"
    assert not (out_dir / "model.safetensors").exists(), "nothing is published by a failed run"

    lines = Lines()
    log.addHandler(lines)
    try:
        train(job, job_file, out_dir, log)  # on the cluster's two nodes again
    finally:
        log.removeHandler(lines)
    assert any("resuming from checkpoint-" in line for line in lines.lines), lines.lines
    assert json.loads((out_dir / "train_metrics.json").read_text())["train_steps"] == 200
