"""Crash and resume: a real training process is SIGKILLed after a checkpoint, re-run, and must end
exactly where an uninterrupted run of the same seed ends."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from pipeline_probe import LMPIPE, PROJECT_ROOT, TINY_CONFIG, on_the_session_server, registered_versions, tiny_config
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from safetensors.torch import load_file

from flows.clm import clm_flow
from lmpipe.store.keys import artifact_path
from lmpipe.training.events import PROGRESS_PREFIX
from lmpipe.training.job import TrainingJob, job_file_content
from lmpipe.training.launcher import training_job
from lmpipe.training.trainer import RUN_TOTALS_FILE
from tasks.download import download
from tasks.flatten import flatten
from tasks.group import group
from tasks.tokenize import tokenize

pytestmark = pytest.mark.integration

MAX_STEPS, EVERY = 30, 5


@flow
def prepare(config, objective: str) -> tuple[str, str]:
    tokens = tokenize(flatten(download(config), config), config, objective)
    # Tasks hand on references (<stage>/<key>); the training job takes directories.
    return str(artifact_path(config.artifacts.root, group(tokens, config))), str(
        artifact_path(config.artifacts.root, tokens)
    )


def job_for(workspace: Path, objective: str, name: str) -> tuple[TrainingJob, Path]:
    config = tiny_config(
        workspace,
        f"train.max_steps={MAX_STEPS}",
        f"train.checkpoint_steps={EVERY}",
        "train.checkpoints_kept=2",
        "train.logging_steps=1",
        f"model.{objective}.hidden_size=64",
    )
    blocks, tokens = prepare(config, objective)
    out_dir = workspace / name / "model"
    out_dir.mkdir(parents=True)
    job = training_job(objective, blocks, tokens, config, workspace / name / "checkpoints")
    job_file = workspace / name / "job.json"
    job_file.write_text(json.dumps(job_file_content(job, out_dir)))
    return job, job_file


def start(objective: str, job_file: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lmpipe.training.worker", str(job_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )


def events(lines: list[str]) -> list[dict]:
    return [json.loads(line[len(PROGRESS_PREFIX) :]) for line in lines if line.startswith(PROGRESS_PREFIX)]


def run_to_end(objective: str, job_file: Path) -> list[str]:
    process = start(objective, job_file)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output.splitlines()


def run_and_kill(objective: str, job_file: Path, kill_at: int) -> int:
    """SIGKILL the training process once it reports step `kill_at` (after a checkpoint); the step it reached."""
    process = start(objective, job_file)
    reached, checkpointed = 0, False
    assert process.stdout is not None
    for line in process.stdout:
        if not line.startswith(PROGRESS_PREFIX):
            continue
        event = json.loads(line[len(PROGRESS_PREFIX) :])
        checkpointed |= event["event"] == "checkpoint"
        if event["event"] == "step":
            reached = event["step"]
            if checkpointed and reached >= kill_at:
                os.kill(process.pid, signal.SIGKILL)
                break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the process must die by SIGKILL mid-run, not finish"
    return reached


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_a_killed_training_resumes_to_the_same_weights_step_and_loss(workspace, objective):
    _, reference_job = job_for(workspace, objective, "uninterrupted")
    run_to_end(objective, reference_job)

    _, job_file = job_for(workspace, objective, "killed")
    kill_at = random.Random().randint(EVERY + 1, MAX_STEPS - EVERY)  # any step after the first checkpoint
    reached = run_and_kill(objective, job_file, kill_at)
    checkpoint_dir = workspace / "killed" / "checkpoints"
    kept = sorted(p.name for p in checkpoint_dir.iterdir() if p.name.startswith("checkpoint-"))
    assert 1 <= len(kept) <= 2, kept  # bounded by checkpoints_kept
    # A checkpoint directory the pipeline never finished (no manifest) must be skipped, not trusted.
    (checkpoint_dir / f"checkpoint-{MAX_STEPS - 1}").mkdir()
    newest = max((checkpoint_dir / name for name in kept), key=lambda p: int(p.name.split("-")[1]))
    earlier_seconds = json.loads((newest / RUN_TOTALS_FILE).read_text())["training_seconds"]

    started = time.monotonic()
    lines = run_to_end(objective, job_file)
    resumed_wall_s = time.monotonic() - started
    resumed = [e for e in events(lines) if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] % EVERY == 0 and resumed[0]["step"] <= reached
    warnings = [e["message"] for e in events(lines) if e["event"] == "warning"]
    assert f"skipping checkpoint checkpoint-{MAX_STEPS - 1}: no manifest (written partially?)" in warnings

    finished, reference = workspace / "killed" / "model", workspace / "uninterrupted" / "model"
    metrics, reference_metrics = (json.loads((d / "train_metrics.json").read_text()) for d in (finished, reference))
    assert metrics["train_steps"] == MAX_STEPS
    # The loss of the whole run, not of the resumed steps only: the checkpoint carries the loss sums.
    assert metrics["train_loss"] == pytest.approx(reference_metrics["train_loss"], abs=1e-5)
    # Tokens/s of the whole run too: every step's tokens over the time spent on the steps kept, which is
    # the killed attempt's time up to its checkpoint plus the resumed attempt's (never the latter alone).
    assert metrics["train_tokens"] == reference_metrics["train_tokens"]
    assert earlier_seconds > 0 and earlier_seconds < metrics["train_runtime_s"] < earlier_seconds + resumed_wall_s
    runtime_s = metrics["train_runtime_s"]  # rounded to 0.01 s; the rate was computed before rounding
    rate_bounds = (metrics["train_tokens"] / (runtime_s + 0.006), metrics["train_tokens"] / (runtime_s - 0.006))
    assert rate_bounds[0] <= metrics["train_tokens_per_s"] <= rate_bounds[1], (metrics, rate_bounds)
    history = json.loads((finished / "train_history.json").read_text())
    reference_history = json.loads((reference / "train_history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, MAX_STEPS + 1))
    assert history[-1]["loss"] == pytest.approx(reference_history[-1]["loss"], abs=1e-5)
    weights, reference_weights = load_file(finished / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    # precision auto trains in bf16 autocast on a CPU with native bf16; the weights stay fp32.
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-5, atol=1e-6, msg=name)


def kill_training_after_first_checkpoint(checkpoints_root: Path, stop: threading.Event) -> None:
    """SIGKILL this test's `python -m lmpipe.training.worker` process once it has written a checkpoint.

    Only a child of this process: the flow runs in-process here, while other pytest-xdist workers may be
    training their own models at the same moment.
    """
    own_children = ["pgrep", "-P", str(os.getpid()), "-f", "python -m lmpipe[.]training[.]worker"]
    while not stop.is_set():
        if any(checkpoints_root.glob("*/checkpoint-*")):  # <root>/checkpoints/<trajectory key>/checkpoint-N
            pids = subprocess.run(own_children, capture_output=True, text=True).stdout
            for pid in pids.split():
                os.kill(int(pid), signal.SIGKILL)
            return
        time.sleep(0.02)


def test_a_new_flow_run_after_a_killed_one_resumes_from_its_checkpoint(workspace):
    config = tiny_config(
        workspace,
        "train.max_steps=400",
        "train.checkpoint_steps=10",
        "train.logging_steps=50",
        "model.clm.hidden_size=64",
    )
    stop = threading.Event()
    killer = threading.Thread(
        target=kill_training_after_first_checkpoint, args=(workspace / "artifacts" / "checkpoints", stop)
    )
    killer.start()
    try:
        killed = clm_flow(config, return_state=True)
    finally:
        stop.set()
        killer.join()
    assert killed.is_failed() and "training process failed (killed by SIGKILL" in killed.message, killed.message
    assert registered_versions(config.registry.tracking_uri) == {}, "a failed run registers nothing"

    again = clm_flow(config, return_state=True)
    assert again.is_completed(), again.message
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[again.state_details.flow_run_id]))
        )
    assert any("train-clm: resuming from checkpoint-" in log.message for log in logs), [log.message for log in logs]
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
    checkpoints = workspace / "artifacts" / "checkpoints"
    assert checkpoints.is_dir() and list(checkpoints.iterdir()) == [], "checkpoints go once published"


def test_a_run_preempted_on_one_machine_resumes_on_another_from_the_shared_root(workspace):
    """Machine A is pre-empted mid-training. Machine B (another working directory, an empty PREFECT_HOME, the
    volume mounted at another path) runs the same flow: it resumes from A's checkpoint, not from step 0."""
    sets = ["train.max_steps=400", "train.checkpoint_steps=10", "train.logging_steps=50", "model.clm.hidden_size=64"]
    stop = threading.Event()
    killer = threading.Thread(
        target=kill_training_after_first_checkpoint, args=(workspace / "artifacts" / "checkpoints", stop)
    )
    killer.start()
    try:
        killed = clm_flow(tiny_config(workspace, *sets), return_state=True)
    finally:
        stop.set()
        killer.join()
    assert killed.is_failed(), killed.message
    (trajectory,) = (workspace / "artifacts" / "checkpoints").iterdir()
    (checkpoint,) = trajectory.glob("checkpoint-*")

    mount = workspace / "machine-b" / "mnt" / "artifacts"
    mount.parent.mkdir(parents=True)
    shutil.move(workspace / "artifacts", mount)
    command = [str(LMPIPE), "run", "clm", "--config", str(TINY_CONFIG)]
    for override in [f"artifacts.root={mount}", f"registry.tracking_uri=sqlite:///{workspace / 'mlflow.db'}", *sets]:
        command += ["--set", override]
    env = on_the_session_server({**os.environ, "PREFECT_HOME": str(workspace / "machine-b" / "prefect-home")})
    resumed = subprocess.run(command, cwd=workspace / "machine-b", env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    wanted = f"train-clm: resuming from {checkpoint.name}"
    deadline = time.monotonic() + 60  # the server records a run's logs a moment after they are sent
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        while True:
            found = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            logs = [log.message for log in found]
            if any(wanted in message for message in logs) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert any(wanted in message for message in logs), "\n".join(logs)
    assert registered_versions(f"sqlite:///{workspace / 'mlflow.db'}") == {"eli5-clm": [1]}
