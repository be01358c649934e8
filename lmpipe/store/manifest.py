"""An artifact's manifest: every file with its size, modification time and sha256, written last.

A directory without a manifest was never finished; one whose files no longer match it was
truncated or corrupted. Either way it is not complete, and its stage runs again rather than
hand on wrong data.

Two depths of checking, because a cache lookup must cost nothing at 100 GB:
- the lookup (`is_complete`) reads no data: every file is there with its size and modification
  time. A file whose time changed (written to in place, copied without its times) is hashed, and
  only that file: same bytes, it is still good.
- the full check (`verify`, and `DigestCheck` while a stage streams its upstream) hashes every byte.
  It catches what keeps both size and time (a bit flipped on disk, a write with its time restored).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmpipe.store.keys import file_digest

MANIFEST = "artifact.json"

_log = logging.getLogger(__name__)


class CorruptArtifactError(RuntimeError):
    """An artifact's bytes no longer match its manifest, found while reading it."""


def file_table(directory: Path, manifest: str = MANIFEST) -> dict[str, dict[str, Any]]:
    """Size, modification time and sha256 of every file under `directory` but its manifest."""
    table = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name != manifest:
            stat = f.stat()
            table[str(f.relative_to(directory))] = {
                "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": file_digest(f),
            }
    return table


def files_problem(directory: Path, files: dict[str, dict[str, Any]], full: bool = True) -> str | None:
    """None when every file of a `file_table` is still there, whole and unchanged; else the first problem.

    full=False reads no data unless a file's modification time changed (see the module's docstring)."""
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != expected["bytes"]:
            return f"{name} has {stat.st_size} bytes, expected {expected['bytes']}"
        untouched = stat.st_mtime_ns == expected.get("mtime_ns")
        if (full or not untouched) and file_digest(path) != expected["sha256"]:
            return f"{name} does not match its checksum" + ("" if full else " (it was written after publishing)")
    return None


def manifest_files(directory: Path) -> dict[str, dict[str, Any]] | str:
    """The manifest's file table, or what is wrong with the manifest."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "missing" if not directory.exists() else "no manifest"
    try:
        return dict(json.loads(manifest.read_text())["files"])
    except (ValueError, KeyError, TypeError):
        return "manifest unreadable or without checksums"


def problem_with(directory: Path, full: bool = False) -> str | None:
    """None for a complete artifact; else what is wrong with it, in a few words. full=True hashes every byte."""
    files = manifest_files(directory)
    if isinstance(files, str):
        return files
    return files_problem(directory, files, full)


def is_complete(directory: Path) -> bool:
    """Published, whole and unchanged as far as a lookup can tell without reading the data."""
    problem = problem_with(directory)
    if problem is not None and directory.exists():
        _log.warning(f"artifact {directory} is not usable ({problem}); it will be rebuilt")
    return problem is None


def verify(directory: Path) -> str | None:
    """None when every byte of the artifact matches its manifest; else the first problem."""
    return problem_with(directory, full=True)


def write_manifest(directory: Path, record: dict[str, Any]) -> None:
    """`record` plus the table of every file now in `directory`; call it last."""
    manifest = {**record, "files": file_table(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text())


def expected_digests(directory: Path) -> dict[Path, str]:
    """Every data file of a published artifact with the sha256 its manifest holds (absolute paths)."""
    files = manifest_files(directory)
    if isinstance(files, str):
        raise CorruptArtifactError(f"artifact {directory} cannot be read: {files}")
    return {directory / name: entry["sha256"] for name, entry in files.items()}


def set_aside(directory: Path, problem: str) -> None:
    """Withdraw a published artifact found corrupt: its manifest goes, so every lookup misses and the next
    build of its key replaces it. The data stays until then, for whoever wants to look at it."""
    try:
        (directory / MANIFEST).rename(directory / f"{MANIFEST}.corrupt")
    except FileNotFoundError:
        pass  # another reader found it first
    _log.error(f"artifact {directory} is corrupt ({problem}); withdrawn, its next build replaces it")


def require_intact(artifact: Path, under: str = "") -> None:
    """Hash every file of a published artifact (those under `under`, if given) against its manifest, before a
    stage that reads them at random (training, evaluation) starts. On a mismatch the artifact is set aside
    and CorruptArtifactError raised, so the stage fails before any model sees the bytes."""
    files = manifest_files(artifact)
    if isinstance(files, str):
        raise CorruptArtifactError(f"artifact {artifact} cannot be read: {files}")
    check = DigestCheck(artifact, {artifact / name: entry["sha256"] for name, entry in files.items()})
    for name in files:
        if name.startswith(under):
            check.finished(artifact / name, file_digest(artifact / name))


class DigestCheck:
    """Checks, as a stage streams through an upstream artifact, that each file it reads whole matches the
    manifest. `expected` maps paths to their sha256 (from `expected_digests`); a file not in it is not checked.

    On a mismatch the upstream is set aside and CorruptArtifactError raised: the reading stage fails
    before it publishes, so nothing built from bad bytes ever reaches a model."""

    def __init__(self, artifact: Path, expected: Mapping[Path, str]):
        self.artifact = artifact
        self.expected = expected

    def wants(self, path: Path) -> bool:
        return path in self.expected

    def finished(self, path: Path, digest: str) -> None:
        """`path` was read to its end and hashed to `digest`."""
        if digest != self.expected[path]:
            problem = f"{path.relative_to(self.artifact)} does not match its checksum"
            set_aside(self.artifact, problem)
            raise CorruptArtifactError(
                f"artifact {self.artifact.parent.name}/{self.artifact.name} is corrupt: {problem}; it was withdrawn "
                "and the next run rebuilds it"
            )

    @classmethod
    def of(cls, artifact: Path) -> DigestCheck:
        return cls(artifact, expected_digests(artifact))
