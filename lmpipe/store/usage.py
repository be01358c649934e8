"""When a run last used an artifact: the modification time of its manifest.

Every cache lookup that finds the artifact complete, and every build, touches it. The manifest is
not in its own file table, so touching it changes no checksum. `lmpipe gc` keeps what was used lately.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmpipe.store.manifest import MANIFEST


def mark_used(directory: Path) -> None:
    """Record that a run used the artifact at `directory` now."""
    try:
        os.utime(directory / MANIFEST)
    except OSError:
        pass  # withdrawn or removed meanwhile, or a read-only root: nothing to mark, and a lookup must not fail


def last_used(directory: Path) -> float | None:
    """When a run last used the artifact (seconds since the epoch); None when it has no manifest."""
    try:
        return (directory / MANIFEST).stat().st_mtime
    except OSError:
        return None
