"""An artifact's manifest: every file with its size and sha256, written last.

A directory without a manifest was never finished; one whose files no longer match it was
truncated or corrupted. Either way it is not complete, and its stage runs again rather than
hand on wrong data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmpipe.store.keys import file_digest

MANIFEST = "artifact.json"

_log = logging.getLogger(__name__)


def file_table(directory: Path, manifest: str = MANIFEST) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `directory` but its manifest: what a manifest vouches for."""
    return {
        str(f.relative_to(directory)): {"bytes": f.stat().st_size, "sha256": file_digest(f)}
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.name != manifest
    }


def files_problem(directory: Path, files: dict[str, dict[str, Any]]) -> str | None:
    """None when every file of a `file_table` is still there, whole and unchanged; else the first problem."""
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
        if file_digest(path) != expected["sha256"]:  # O(size): read once per check, never trusted from memory
            return f"{name} does not match its checksum"
    return None


def problem_with(directory: Path) -> str | None:
    """None for a complete artifact; else what is wrong with it, in a few words."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "missing" if not directory.exists() else "no manifest"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "manifest unreadable or without checksums"
    return files_problem(directory, files)


def is_complete(directory: Path) -> bool:
    """Published, whole and unchanged: each file still matches the manifest written last."""
    problem = problem_with(directory)
    if problem is not None and directory.exists():
        _log.warning(f"artifact {directory} is not usable ({problem}); it will be rebuilt")
    return problem is None


def write_manifest(directory: Path, record: dict[str, Any]) -> None:
    """`record` plus the table of every file now in `directory`; call it last."""
    manifest = {**record, "files": file_table(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text())
