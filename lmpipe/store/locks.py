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
    path = lock_file(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"{directory.parent.name}/{directory.name}: another run is building it; waiting to reuse it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def lock_file(directory: Path) -> Path:
    """The lock file of the artifact at `<root>/<stage>/<key>`: `<root>/.locks/<stage>-<key>.lock`."""
    return directory.parent.parent / LOCKS / f"{directory.parent.name}-{directory.name}.lock"


@contextmanager
def try_exclusive(directory: Path, create: bool = True) -> Iterator[bool]:
    """Hold the lock `exclusive(directory)` takes if no one holds it now (yields True); yields False at once if
    someone does. create=False makes no lock file where none is (a dry run changes nothing on the root): no
    one can hold a lock whose file is not there."""
    path = lock_file(directory)
    if not create and not path.is_file():
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if create else "r") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
