"""Where an artifact lives: `<root>/<stage>/<key>`, key = a hash of everything that determines it."""

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
    return Path(root).expanduser().resolve() / stage / fingerprint(inputs)
