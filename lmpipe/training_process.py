"""Run training in its own process and relay its progress to the Prefect run logger.

Training runs as a child process so that a crash, a segfault or an out-of-memory kill takes
down only the child, never the Prefect worker. The same shape later lets the launcher swap
`python -m` for `torchrun` (multi-GPU) and resume from checkpoints.

Protocol: the child prints one JSON object per line on stdout, prefixed with PROGRESS_PREFIX;
every other line (warnings, tracebacks) is relayed as-is.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lmpipe.prefect_reports import TrainingProgress

PROGRESS_PREFIX = "@@progress "
_TAIL_LINES = 30


class TrainingFailed(RuntimeError):
    """The training process exited non-zero; the message carries the end of its output."""


# ---------------------------------------------------------------------------- child side


def emit(event: str, **fields: Any) -> None:
    print(PROGRESS_PREFIX + json.dumps({"event": event, **fields}), flush=True)


class ProgressCallback(TrainerCallback):
    """Reports step, loss and tokens/s every logging step, from the child process."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self._started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()
        emit("begin", max_steps=state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        elapsed = time.perf_counter() - self._started
        emit(
            "step",
            step=state.global_step,
            max_steps=state.max_steps,
            loss=round(float(logs["loss"]), 4),
            learning_rate=logs.get("learning_rate"),
            tokens_per_s=round(state.global_step * self.tokens_per_step / max(elapsed, 1e-9)),
        )


def exit_with_parent(poll_s: float = 2.0) -> None:
    """End this training process if its parent (the task) dies, so no trainer is left holding a GPU.

    The parent kills us on errors and cancellation; this covers the parent being killed outright.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def child_main(train: Callable[[dict[str, Any]], None]) -> None:
    """Entry point of a training process: `python -m tasks.train_xxx job.json`.

    Bad input found in the child (a block_size too long for a pretrained model, an unreachable
    Hub) is sent back as an event, so the parent raises the same one-line error.
    """
    from lmpipe.errors import is_input_error

    job = json.loads(Path(sys.argv[1]).read_text())
    exit_with_parent()
    try:
        train(job)
    except Exception as error:
        if not is_input_error(error):
            raise
        emit("input_error", message=str(error))
        sys.exit(2)


# ---------------------------------------------------------------------------- parent side


def _relay(line: str, log: logging.Logger | logging.LoggerAdapter, label: str) -> dict[str, Any] | None:
    if not line.startswith(PROGRESS_PREFIX):
        if line.strip():
            log.debug(f"{label}: {line}")
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX) :])
        _log_event(event, log, label)
    except (ValueError, KeyError, TypeError):  # a malformed report must never stop the relay
        log.info(f"{label}: {line[len(PROGRESS_PREFIX) :]}")
        return None
    return event


# How each event reads in the task's log: (level, message). Events not listed are logged as they are.
_EVENT_LINES: dict[str, tuple[int, Callable[[dict[str, Any]], str]]] = {
    "step": (
        logging.INFO,
        lambda e: f"step {e['step']}/{e['max_steps']} loss {e['loss']:.4f} {e['tokens_per_s']:,} tokens/s",
    ),
    "begin": (logging.INFO, lambda e: f"training for {e['max_steps']} steps"),
    "device": (logging.INFO, lambda e: f"device {e['device']}"),
    "model": (
        logging.INFO,
        lambda e: f"model with {e['parameters']:,} parameters, {e['train_blocks']:,} training blocks",
    ),
    "checkpoint": (logging.INFO, lambda e: f"checkpoint at step {e['step']}"),
    "resume": (
        logging.WARNING,
        lambda e: f"resuming from {Path(e['path']).name} (step {e['step']}), left by an earlier run",
    ),
    "warning": (logging.WARNING, lambda e: e["message"]),
    "done": (
        logging.INFO,
        lambda e: (
            f"done, train_loss {e['train_loss']:.4f}, {e['train_steps']} steps, "
            f"{e['train_tokens']:,} tokens in {e['train_runtime_s']:.1f} s"
        ),
    ),
}


def _log_event(event: dict[str, Any], log: logging.Logger | logging.LoggerAdapter, label: str) -> None:
    if event["event"] == "input_error":
        return  # raised by the parent once the process has ended
    level, line = _EVENT_LINES.get(event["event"], (logging.INFO, str))
    log.log(level, f"{label}: {line(event)}")


def run_training_process(
    module: str, job: dict[str, Any], job_file: Path, log: logging.Logger | logging.LoggerAdapter, label: str
) -> None:
    """Run `python -m <module> <job_file>` and stream its progress; raise TrainingFailed on error."""
    job_file.write_text(json.dumps(job, indent=2))
    project_root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", module, str(job_file)]
    log.info(f"{label}: launching {' '.join(command[1:3])} (pid follows)")
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    input_error: str | None = None
    progress, max_steps = TrainingProgress(label), 0
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=os.getcwd()
    ) as child:
        log.info(f"{label}: training process pid {child.pid}")
        try:
            assert child.stdout is not None
            for raw in child.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                event = _relay(line, log, label)
                if not event:
                    continue
                if event["event"] == "input_error":
                    input_error = event["message"]
                elif event["event"] in ("begin", "step"):  # the Prefect UI shows how far along training is
                    max_steps = event["max_steps"]
                    progress.update(event.get("step", 0), max_steps)
                elif event["event"] == "done":
                    progress.update(max_steps, max_steps)
        except BaseException:
            child.kill()  # never leave an orphaned trainer holding the GPU
            raise
        returncode = child.wait()
    if input_error is not None:
        from lmpipe.errors import PipelineInputError

        raise PipelineInputError(input_error)
    if returncode != 0:
        output = [line for line in tail if line.strip() and not line.startswith(PROGRESS_PREFIX)]
        log.error(f"{label}: last output of the training process:\n" + "\n".join(output))
        reason = "killed (out of memory?)" if returncode in (-9, 137) else f"exit code {returncode}"
        last_line = output[-1].strip() if output else "no output"
        raise TrainingFailed(f"{label}: training process failed ({reason}): {last_line}")
