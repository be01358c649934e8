"""Where an artifact lives: `<root>/<stage>/<key>`, key = a hash of everything that determines it.

Artifacts name each other, and tasks hand each other, the reference `<stage>/<key>`, relative to the
root: never an absolute path. The same volume mounted at `./artifacts` on a laptop and at `/artifacts`
in a pod is then one store, and a root moved with `mv` keeps its cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(value: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able value (dict keys sorted)."""
    canonical = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_dir(root: str | Path, stage: str, inputs: dict[str, Any]) -> Path:
    """Where a stage with these inputs writes; the same inputs always give the same directory."""
    return artifacts_root(root) / stage / fingerprint(inputs)


def artifacts_root(root: str | Path) -> Path:
    return Path(root).expanduser().resolve()


def artifact_ref(directory: str | Path) -> str:
    """`<stage>/<key>` of an artifact directory: how it is named anywhere outside its own root."""
    directory = Path(directory)
    return f"{directory.parent.name}/{directory.name}"


def located(root: str | Path, refs: list[str]) -> list[str]:
    """Where the artifacts `refs` are on this machine: what a flow returns to whoever called it."""
    return [str(artifact_path(root, ref)) for ref in refs]


def artifact_path(root: str | Path, ref: str | Path) -> Path:
    """The directory of artifact `ref` under `root`. Takes an absolute path too, as older manifests recorded
    them: only its last two parts count, so an artifact recorded under another mount point is found here."""
    return artifacts_root(root) / artifact_ref(ref)
