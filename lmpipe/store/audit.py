"""`lmpipe verify`: every byte of the published artifacts checked against their manifests, on demand.

A cache lookup reads no data (lmpipe.store.manifest), and a stage checks only what it reads. This is
the full sweep: after a disk scare, before copying a root elsewhere, or from a weekly schedule. A
corrupt artifact is withdrawn, so the next run that needs it builds it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmpipe.store.manifest import manifest_files, set_aside, verify


@dataclass(frozen=True)
class ArtifactCheck:
    stage: str
    key: str
    files: int
    bytes: int
    problem: str | None  # None: every byte matches


def published_artifacts(root: Path, stage: str | None = None) -> Iterator[Path]:
    """Artifact directories under root (of one stage, if given), in stage then key order. Scratch and
    discarded directories (dot names), the lock and digest folders, and training checkpoints (each has
    its own manifest, checked when a run resumes from it) are not artifacts."""
    stages = [root / stage] if stage else sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    stages = [d for d in stages if d.name != "checkpoints"]
    for stage_dir in stages:
        if stage_dir.is_dir():
            yield from sorted(d for d in stage_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def check_artifact(directory: Path) -> ArtifactCheck:
    files = manifest_files(directory)
    listed = files if isinstance(files, dict) else {}
    problem = files if isinstance(files, str) else verify(directory)
    if problem is not None and isinstance(files, dict):
        set_aside(directory, problem)  # corrupt: the next run that needs it rebuilds it
    return ArtifactCheck(
        directory.parent.name,
        directory.name,
        len(listed),
        sum(entry["bytes"] for entry in listed.values()),
        problem,
    )


def check_root(root: Path, stage: str | None = None) -> list[ArtifactCheck]:
    return [check_artifact(directory) for directory in published_artifacts(root, stage)]
