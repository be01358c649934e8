"""Build an artifact once, in a scratch directory, and publish it whole or not at all.

A stage writes into `<root>/<stage>/.<key>.building-<random>`; when its build returns, the
manifest is written last and the directory is renamed to `<root>/<stage>/<key>` (one atomic
rename). On any error the scratch directory is removed, so nothing half-written is ever visible
under an artifact's name, and a published artifact is never written to again. A build that was
killed (SIGKILL, a lost node) cannot remove its scratch directory: the next build of the same key
does, holding the artifact's lock, so no live build's directory can be among them.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmpipe.store.locks import exclusive
from lmpipe.store.manifest import is_complete, write_manifest

_log = logging.getLogger(__name__)


def ensure_built(
    final_dir: Path,
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], object],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> bool:
    """Publish `final_dir` by running `build(scratch)`, unless a complete copy is already there.

    Returns True when this call built it. Holds the artifact's lock throughout, so two runs that
    need the same artifact at the same moment build it once: the second waits, then reuses it.
    """
    with exclusive(final_dir, log):
        if is_complete(final_dir):
            return False
        remove_leftovers(final_dir, log)
        with building(final_dir, stage, inputs) as scratch:
            build(scratch)
    return True


def remove_leftovers(final_dir: Path, log: logging.Logger | logging.LoggerAdapter = _log) -> None:
    """Scratch and discarded directories of `final_dir` left by builds that were killed. Only call it
    holding the artifact's lock: every build of this key holds it, so none of these is still in use."""
    for pattern in (f".{final_dir.name}.building-*", f".{final_dir.name}.discarded-*"):
        for leftover in final_dir.parent.glob(pattern):
            log.info("removing %s, left by a build that was killed", leftover.name)
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def building(final_dir: Path, stage: str, inputs: dict[str, Any]) -> Iterator[Path]:
    """Yield a scratch directory; on success publish it atomically as `final_dir`."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = final_dir.parent / f".{final_dir.name}.building-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        write_manifest(scratch, {"stage": stage, "inputs": inputs})
        if final_dir.exists() and is_complete(final_dir):  # a concurrent run finished first: keep its result
            shutil.rmtree(scratch)
            return
        if final_dir.exists():  # truncated or corrupt: move it aside (atomic), then publish ours
            discarded = final_dir.parent / f".{final_dir.name}.discarded-{uuid.uuid4().hex[:8]}"
            final_dir.rename(discarded)
            shutil.rmtree(discarded, ignore_errors=True)
        scratch.rename(final_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
