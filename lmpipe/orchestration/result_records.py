"""Prefect's cache records for our tasks, kept with the artifacts they point at.

By default Prefect keeps a task's result record in the worker's `PREFECT_HOME`, so a Kubernetes pod
starts with none: every stage would run again, or find its artifact and never show "Cached". Here
the records live in `<artifacts.root>/.prefect-results/`, so every worker, laptop or pod, that mounts
the same artifact volume shares them, and a root moved with `mv` takes them along.

The root is a flow parameter (a UI form can set it), while a task's `result_storage` is fixed when the
task is declared (and must be a saved block or a fixed path). So the cache key function, the one hook
Prefect calls with the task run's parameters and its result store before the cache lookup, points
that run's store at its root (`keep_records_under`). The store is the task run's own copy: no other
run sees the change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem

from lmpipe.store.atomic_file import write_atomically

RESULTS_DIR = ".prefect-results"  # beside the stage directories; `lmpipe gc` leaves it alone


class AtomicLocalFileSystem(LocalFileSystem):
    """Prefect's local file system, writing each record atomically (temporary file, then rename): a worker on
    another machine reading the same record sees the old one or the new one, never half of it."""

    _block_type_name = "lmpipe atomic local file system"  # its own block type: never stands in for LocalFileSystem

    def _write_atomically(self, path: str, content: bytes) -> str:
        target = self._resolve_path(path)
        write_atomically(target, content)
        return str(target)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return self._write_atomically(path, content)

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        # Prefect calls it with _sync=True (prefect._internal.compatibility.blocks); it is synchronous anyway.
        return self._write_atomically(path, content)


def records_dir(artifacts_root: Path) -> Path:
    return artifacts_root / RESULTS_DIR


def keep_records_under(result_store: Any, artifacts_root: Path) -> None:
    """Make a task run's result store read and write its records under `<artifacts_root>/.prefect-results`."""
    if result_store is not None:
        result_store.result_storage = AtomicLocalFileSystem(basepath=str(records_dir(artifacts_root)))
