"""Resumable training checkpoints: written atomically, verified before use, bounded in number.

The Hugging Face Trainer writes a checkpoint (model, optimizer, scheduler, RNG and trainer
state) straight into `checkpoint-N`, so a kill mid-write leaves a directory that looks usable.
Here it writes into a staging directory, a manifest of every file's size and sha256 is added
last, and only then is it renamed to `checkpoint-N`. On resume, a checkpoint whose manifest is
missing or whose files do not match it is skipped with a warning.

Checkpoints live under the artifact root, keyed like the training artifact, and resuming
only ever reads from there: never a user-supplied path.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from lmpipe.store.manifest import file_table, files_problem

CHECKPOINT_MANIFEST = "lmpipe-checkpoint.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"  # where a checkpoint is written before it is complete (lmpipe.training.trainer)

_log = logging.getLogger(__name__)


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def write_manifest(checkpoint: Path) -> None:
    files = file_table(checkpoint, manifest=CHECKPOINT_MANIFEST)
    (checkpoint / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def verify(checkpoint: Path) -> str | None:
    """None when every file the manifest lists is there, whole and unchanged; else what is wrong."""
    manifest = checkpoint / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return "no manifest (written partially?)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as error:
        return f"unreadable manifest ({error})"
    return files_problem(checkpoint, files)


def latest_complete(run_dir: Path, warn: Callable[[str], None] = _log.warning) -> Path | None:
    """The newest checkpoint that verifies; each newer one that does not is reported and skipped."""
    if not run_dir.is_dir():
        return None
    candidates = sorted(
        (p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
        key=checkpoint_step,
        reverse=True,
    )
    for checkpoint in candidates:
        problem = verify(checkpoint)
        if problem is None:
            return checkpoint
        warn(f"skipping checkpoint {checkpoint.name}: {problem}")
    return None


def rotate(run_dir: Path, keep: int) -> None:
    """Keep the `keep` newest complete checkpoints; older ones and leftovers of any kind go."""
    complete = sorted(
        (p for p in run_dir.iterdir() if checkpoint_step(p) is not None and (p / CHECKPOINT_MANIFEST).is_file()),
        key=checkpoint_step,
    )
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
