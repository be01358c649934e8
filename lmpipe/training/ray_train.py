"""Training across nodes on an existing Ray cluster, with Ray Train: `python -m lmpipe.training.ray_train job.json`.

What the train task starts instead of torchrun when train.launcher is `ray`. This process is a Ray
driver: it connects to the cluster at train.ray_address, asks Ray Train's TorchTrainer for
train.ray_workers workers (train.ray_cpus_per_worker CPUs and train.ray_gpus_per_worker GPUs each,
spread over the nodes), and each worker trains one rank (lmpipe.training.ray_worker). Ray places,
starts, connects and stops the workers; nothing here schedules anything.

It speaks to its launcher as every training process does (lmpipe.training.events on stdout): the
workers' events arrive through a Ray queue and are printed here. How the run ended becomes one line:
a cluster that cannot be reached, a worker lost with its node, or a worker's error. Ray Train does not
retry (max_failures=0): the task fails, and its re-run resumes from the last checkpoint, which rank 0
wrote to the artifact root every node mounts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lmpipe.compute.child_processes import PARENT_PID_ENV, die_with_parent
from lmpipe.compute.ray_cluster import cluster_problem
from lmpipe.config.schema import TrainConfig
from lmpipe.errors import is_input_error
from lmpipe.training import events
from lmpipe.training.job import TrainingJob

# What the workers need from this process's environment, wherever they run: offline switches, telemetry off.
# Never credentials: a runtime_env is shown in Ray's dashboard (the cluster's pods take theirs from Secrets).
_FORWARDED = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ENDPOINT",
    "HF_HUB_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "TOKENIZERS_PARALLELISM",
)


def fail(message: str) -> None:
    events.print_line({"event": "failed", "message": message})
    sys.exit(1)


def one_line(error: BaseException) -> str:
    """The error as the user needs it: its type and the first line that says something."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def connect(address: str) -> None:
    import ray

    # ray.init waits minutes on an address nobody answers: a dead cluster is found first, in seconds.
    if problem := cluster_problem(address):
        fail(f"cannot reach the Ray cluster: {problem}")

    forwarded = {name: os.environ[name] for name in _FORWARDED if name in os.environ}
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": forwarded},
            logging_level=logging.WARNING,
            log_to_driver=True,  # the workers' own output reaches the task's debug log
        )
    except Exception as error:  # ConnectionError, or Ray's own when the GCS never answers
        fail(f"cannot reach the Ray cluster at train.ray_address={address!r}: {one_line(error)}")


def scaling(train: TrainConfig) -> Any:
    from ray.train import ScalingConfig

    resources = {"CPU": train.ray_cpus_per_worker}
    if train.ray_gpus_per_worker > 0:
        resources["GPU"] = train.ray_gpus_per_worker
    return ScalingConfig(
        num_workers=train.ray_workers,
        use_gpu=train.ray_gpus_per_worker > 0,
        resources_per_worker=resources,
        placement_strategy="SPREAD",  # across nodes where it can: a node lost takes fewer ranks with it
    )


def relay(queue: Any, finished: threading.Event, placement: list[dict[str, Any]]) -> None:
    """Print the workers' events for the launcher, until training has finished and the queue is empty; keep
    which rank runs on which node (`placement`), to say which were lost if the run fails."""
    from ray.util.queue import Empty

    while True:
        try:
            event = queue.get(timeout=0.5)
            if event.get("event") == "ranks":
                placement[:] = event["ranks"]
            events.print_line(event)
        except Empty:
            if finished.is_set():
                return
        except Exception:  # the queue's actor went with the cluster: training's own error says why
            return


def lost_ranks(placement: list[dict[str, Any]], wait_s: float = 10.0) -> list[dict[str, Any]]:
    """The ranks whose node has left the cluster. A node's death reaches the cluster's records a little after
    the survivors' connections to it break, which is what usually fails the run first: wait a few seconds."""
    import ray

    if not placement:  # the run failed before its workers said where they are
        return []
    deadline = time.monotonic() + wait_s
    while True:
        try:
            dead = {node["NodeID"] for node in ray.nodes() if not node["Alive"]}
        except Exception:  # the head itself is gone: every rank went with it
            return placement
        lost = [rank for rank in placement if rank["node"] in dead]
        if lost or time.monotonic() >= deadline:
            return lost
        time.sleep(0.5)


def why_it_failed(error: BaseException, workers: int, placement: list[dict[str, Any]]) -> tuple[str, bool]:
    """(one line, whether it is the user's input error) for Ray Train's TrainingFailedError."""
    failures: dict[int, BaseException] = getattr(error, "worker_failures", None) or {}
    if not failures:
        cause = getattr(error, "controller_failure", None) or error
        return f"Ray Train failed: {one_line(cause)}", False
    rank, failure = min(failures.items())
    cause = getattr(failure, "cause", None) or failure  # a worker's own exception, unwrapped from Ray's
    if is_input_error(cause):
        return str(cause), True
    if lost := lost_ranks(placement):  # the others failed because it went: their connection to it broke
        first = lost[0]
        return (
            f"Ray Train worker rank {first['rank']} of {workers} was lost: its node {first['node'][:12]} "
            f"({first['ip']}) left the cluster; then rank {rank} failed: {one_line(cause)}",
            False,
        )
    return f"Ray Train worker rank {rank} of {workers} failed: {one_line(cause)}", False


def main(job_file: Path) -> None:
    die_with_parent(int(os.environ.get(PARENT_PID_ENV, os.getppid())), signal.SIGTERM)
    # SIGTERM (the task cancelled or dead) as an exit, so Ray's driver shutdown runs: the cluster then stops
    # this run's workers at once rather than when it notices the driver is gone.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    content = json.loads(job_file.read_text())
    job = TrainingJob.model_validate(content["job"])
    connect(job.train.ray_address)

    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from lmpipe.training.ray_worker import train_on_worker

    queue = Queue(actor_options={"num_cpus": 0})  # takes no worker's CPU
    finished = threading.Event()
    placement: list[dict[str, Any]] = []
    relaying = threading.Thread(target=relay, args=(queue, finished, placement), name="relay-events", daemon=True)
    relaying.start()
    run_name = f"lmpipe-{Path(content['out_dir']).name}"
    storage = Path(job.checkpoint_dir).parent / "ray"  # Ray Train's own run state, on the shared root
    trainer = TorchTrainer(
        train_on_worker,
        train_loop_config={"job": content["job"], "out_dir": content["out_dir"], "events": queue},
        scaling_config=scaling(job.train),
        run_config=RunConfig(name=run_name, storage_path=str(storage), failure_config=FailureConfig(max_failures=0)),
    )
    try:
        trainer.fit()
    except Exception as error:
        finished.set()
        relaying.join(timeout=5)
        message, input_error = why_it_failed(error, job.train.ray_workers, placement)
        if input_error:
            events.print_line({"event": "input_error", "message": message})
            sys.exit(2)
        fail(message)
    finally:
        finished.set()
        relaying.join(timeout=5)
        shutil.rmtree(storage / run_name, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
