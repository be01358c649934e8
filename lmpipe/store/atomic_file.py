"""A file replaced whole: written beside its target under a hidden scratch name, then renamed over it.

A reader on this machine or another one sharing the volume sees the old file or the new one, never
half of either; a write that fails leaves no scratch file behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")  # unique: writers may race
    try:
        scratch.write_bytes(content)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
