"""The progress protocol between the training process and its launcher.

The child prints one JSON object per line on stdout, prefixed with PROGRESS_PREFIX; every other
line (warnings, tracebacks) is relayed as it is. The launcher renders each event as one log line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_PREFIX = "@@progress "


def print_line(event: dict[str, Any]) -> None:
    print(PROGRESS_PREFIX + json.dumps(event), flush=True)


# Where events go: stdout, read by the launcher; a Ray Train worker's own stdout is not its launcher's,
# so there they go through a Ray queue that the Ray driver prints from (lmpipe.training.ray_train).
_sink: Callable[[dict[str, Any]], None] = print_line


def send_to(sink: Callable[[dict[str, Any]], None]) -> None:
    global _sink
    _sink = sink


def emit(event: str, **fields: Any) -> None:
    """Child side: report one event to the launcher; with several ranks, rank 0 speaks for every rank."""
    if os.environ.get("RANK", "0") != "0":
        return
    _sink({"event": event, **fields})


def parse(line: str) -> dict[str, Any] | None:
    """Launcher side: the event on this line, or None for a plain line (or a malformed report)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


# How each event reads in the task's log: (level, message). Events not listed are logged as they are.
EVENT_LINES: dict[str, tuple[int, Callable[[dict[str, Any]], str]]] = {
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
    "ranks": (
        logging.INFO,
        lambda e: (
            f"{len(e['ranks'])} Ray Train workers on {len({r['node'] for r in e['ranks']})} nodes: "
            + "; ".join(f"rank {r['rank']} on node {r['node'][:12]} ({r['ip']}): {r['device']}" for r in e["ranks"])
        ),
    ),
    "done": (
        logging.INFO,
        lambda e: (
            f"done, train_loss {e['train_loss']:.4f}, {e['train_steps']} steps, "
            f"{e['train_tokens']:,} tokens in {e['train_runtime_s']:.1f} s"
        ),
    ),
}


def log_line(event: dict[str, Any]) -> tuple[int, str]:
    """(level, text) of an event in the launcher's log."""
    level, line = EVENT_LINES.get(event["event"], (logging.INFO, str))
    try:
        return level, line(event)
    except (KeyError, TypeError, ValueError):  # a malformed report must never stop the relay
        return logging.INFO, str(event)
