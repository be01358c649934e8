"""The launcher side of training, in the flow process: start the training process, relay its
progress, and turn how it ended into one clear outcome.

Training runs as a child process so that a crash, a segfault or an out-of-memory kill takes down
only the child, never the Prefect worker. The child is `python -m lmpipe.training.worker job.json`
(lmpipe.training.worker); it reports through lmpipe.training.events.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from lmpipe.compute import child_processes
from lmpipe.config.schema import PipelineConfig
from lmpipe.data.tokenizer_choice import tokenizer_origin
from lmpipe.errors import PipelineInputError, TrainingFailed
from lmpipe.models.base import require_objective_tokens
from lmpipe.objectives import Objective, spec_of
from lmpipe.store.keys import artifact_ref
from lmpipe.store.locks import exclusive
from lmpipe.store.manifest import require_intact
from lmpipe.store.publish import ensure_built

# The training process's module, imported rather than named as a string: that import is what puts the
# training code (loop, trainer, models) into the train stage's derived cache key.
from lmpipe.training import elastic, events, ray_train, worker
from lmpipe.training.job import TrainingJob, job_file_content
from lmpipe.training.placement import placement_of

_TAIL_LINES = 30
PROJECT_ROOT = Path(__file__).resolve().parents[2]

Progress = Callable[[int, int], None]  # (step, max_steps)


def training_job(
    objective: Objective, blocks_dir: str, tokenize_dir: str, config: PipelineConfig, checkpoint_dir: Path
) -> TrainingJob:
    """The job that trains `objective` on these artifacts, checkpointing into `checkpoint_dir` (under the
    artifact root: checkpoints outlive a killed attempt, and only the pipeline ever writes there)."""
    return TrainingJob(
        objective=objective,
        blocks_dir=blocks_dir,
        tokenizer_dir=str(Path(tokenize_dir) / "tokenizer"),
        model=getattr(config.model, objective),
        train=config.train,
        block_size=config.data.block_size,
        world_size=placement_of(config.train).world_size,
        checkpoint_dir=str(checkpoint_dir),
    )


def train_once(
    objective: Objective,
    out: Path,
    checkpoint_dir: Path,
    blocks_dir: str,
    tokenize_dir: str,
    config: PipelineConfig,
    log: logging.Logger | logging.LoggerAdapter,
    on_progress: Progress | None = None,
) -> None:
    """A training task's body: train `objective` into `out` unless it is built; resume from, and once
    published delete, the checkpoints keyed like it."""
    label = spec_of(objective).train_stage
    # Before any training starts: a masked LM needs a tokenizer with a mask token, say.
    tokenizer = AutoTokenizer.from_pretrained(str(Path(tokenize_dir) / "tokenizer"))
    require_objective_tokens(tokenizer, objective, tokenizer_origin(config, objective).field)
    job = training_job(objective, blocks_dir, tokenize_dir, config, checkpoint_dir)

    def build(scratch: Path) -> None:
        # Every block is read, many times, from a memory map: its bytes are checked once, here, first.
        require_intact(Path(blocks_dir), "dataset/")
        require_intact(Path(tokenize_dir), "tokenizer/")
        job_file = scratch / "job.json"
        run_training_process(worker.__name__, job_file_content(job, scratch), job_file, log, label, on_progress)
        job_file.unlink()  # it names the scratch directory; the artifact's manifest records the inputs

    # One trainer per checkpoint directory: runs that split one global batch differently share it.
    with exclusive(checkpoint_dir, log):
        if ensure_built(out, label, manifest_inputs(job), build, log):
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the model is published: nothing to resume


def manifest_inputs(job: TrainingJob) -> dict[str, Any]:
    """The job as the model's manifest records it: its artifacts by reference, so no mount point is kept."""
    tokenizer = Path(job.tokenizer_dir)
    return job.model_dump(mode="json") | {
        "blocks_dir": artifact_ref(job.blocks_dir),
        "tokenizer_dir": f"{artifact_ref(tokenizer.parent)}/{tokenizer.name}",
        "checkpoint_dir": artifact_ref(job.checkpoint_dir),
    }


def run_training_process(
    module: str,
    job: dict[str, Any],
    job_file: Path,
    log: logging.Logger | logging.LoggerAdapter,
    label: str,
    on_progress: Progress | None = None,
) -> None:
    """Run `python -m <module> <job_file>` and stream its progress; raise TrainingFailed on error, or the
    child's input error as a PipelineInputError."""
    job_file.write_text(json.dumps(job, indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        **child_processes.child_environment(),
    }
    processes = int(job.get("job", {}).get("world_size", 1))
    train = job.get("job", {}).get("train", {})
    if train.get("launcher") == "ray":  # a Ray driver, whose Ray Train workers each run a rank
        command = [sys.executable, "-m", ray_train.__name__, str(job_file)]
        log.info(f"{label}: launching {processes} Ray Train workers on the Ray cluster at {train['ray_address']}")
    elif processes > 1:  # torchrun, which starts `module` in each rank
        command = [sys.executable, "-m", elastic.__name__, str(processes), str(job_file)]
        log.info(f"{label}: launching {processes} ranks with torch's elastic launcher (torchrun)")
    else:
        command = [sys.executable, "-m", module, str(job_file)]
        env |= one_visible_gpu(log, label)
        log.info(f"{label}: launching {' '.join(command[1:3])} (pid follows)")
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    input_error: str | None = None
    failure: str | None = None  # how the run failed, when the training process could say it in one line
    max_steps = 0
    oom_kills_before = child_processes.oom_kills()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=os.getcwd()
    ) as child:
        log.info(f"{label}: training process pid {child.pid}")
        try:
            assert child.stdout is not None
            for raw in child.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                event = events.parse(line)
                if event is None:
                    if line.startswith(events.PROGRESS_PREFIX):  # malformed: shown, never fatal
                        log.info(f"{label}: {line[len(events.PROGRESS_PREFIX) :]}")
                    elif line.strip():
                        log.debug(f"{label}: {line}")
                    continue
                if event["event"] == "input_error":  # raised once the process has ended
                    input_error = event.get("message", "training input error")
                    continue
                if event["event"] == "failed":
                    failure = str(event.get("message", "training failed"))
                    continue
                level, text = events.log_line(event)
                log.log(level, f"{label}: {text}")
                if on_progress is None:
                    continue
                if event["event"] in ("begin", "step"):  # the Prefect UI shows how far along training is
                    max_steps = event.get("max_steps", max_steps)
                    on_progress(event.get("step", 0), max_steps)
                elif event["event"] == "done":
                    on_progress(max_steps, max_steps)
        except BaseException:
            child.kill()  # never leave an orphaned trainer holding the GPU
            raise
        returncode = child.wait()
    if input_error is not None:
        raise PipelineInputError(input_error)
    if returncode != 0 and failure is not None:
        raise TrainingFailed(f"{label}: {failure}")
    if returncode != 0:
        output = [line for line in tail if line.strip() and not line.startswith(events.PROGRESS_PREFIX)]
        log.error(f"{label}: last output of the training process:\n" + "\n".join(output))
        rank = elastic.failed_rank(output) if processes > 1 else None
        if rank is not None:  # torchrun's report names the rank that failed first
            ending = child_processes.ending_of(rank.exitcode, rank.pid, oom_kills_before)
            last_line = child_processes.last_meaningful_line(elastic.ranks_output(output)) or "no output"
            raise TrainingFailed(f"{label}: rank {rank.rank} of {processes} failed ({ending}): {last_line}")
        ending = child_processes.ending_of(returncode, child.pid, oom_kills_before)
        last_line = child_processes.last_meaningful_line(output) or "no output"
        raise TrainingFailed(f"{label}: training process failed ({ending}, pid {child.pid}): {last_line}")


def one_visible_gpu(log: logging.Logger | logging.LoggerAdapter, label: str) -> dict[str, str]:
    """The environment that keeps a one-process run on one GPU: with several visible, the Trainer would
    otherwise wrap the model in DataParallel, which is slower than DDP and not what was asked for."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(count))).split(",")
    log.info(f"{label}: training on 1 of the {count} visible GPUs (train.processes=1; 'auto' would use all)")
    return {"CUDA_VISIBLE_DEVICES": visible[0]}
