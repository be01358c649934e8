"""One builder per artifact, across threads and processes that share the artifact root."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS = ".locks"  # beside the stage directories, so a stage directory holds artifacts only

_log = logging.getLogger(__name__)


@contextmanager
def exclusive(directory: Path, log: logging.Logger | logging.LoggerAdapter = _log) -> Iterator[None]:
    """Hold the lock of the artifact at `directory` (`<root>/<stage>/<key>`) while inside.

    An flock on `<root>/.locks/<stage>-<key>.lock`: the kernel drops it when its holder dies (even
    by SIGKILL), so a crashed run never leaves a stale lock behind. The lock file itself stays, as
    deleting it would race with a run that has just opened it.
    """
    locks = directory.parent.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{directory.parent.name}-{directory.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"{directory.parent.name}/{directory.name}: another run is building it; waiting to reuse it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
