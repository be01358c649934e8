"""Prefect's cache, keyed by each stage's content-addressed artifact directory.

A stage returns the reference `<stage>/<key>` of its artifact, never the data and never an absolute
path, and its Prefect cache key is that reference. Both are the same wherever the artifact volume is
mounted, and the records live on that volume (lmpipe.orchestration.result_records), so any worker
that mounts it sees the stage Cached. Before every lookup the key function checks the directory is
still there and complete; if it is not (deleted, or a failed build), it expires Prefect's record, so
the stage runs again instead of returning a stale reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from lmpipe.orchestration.result_records import keep_records_under
from lmpipe.store.keys import artifact_ref
from lmpipe.store.manifest import is_complete
from lmpipe.store.publish import ensure_built
from lmpipe.store.usage import mark_used

Log = logging.Logger | logging.LoggerAdapter


def cached_stage(output_dir_of: Callable[..., Path]) -> dict[str, Any]:
    """Task options that key Prefect's cache by the stage's artifact directory.

    `output_dir_of` takes the task's parameters and returns its output directory.
    """

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        out = output_dir_of(**parameters)
        key = cache_key_of(out)
        store = getattr(context, "result_store", None)
        keep_records_under(store, out.parent.parent)  # before Prefect looks the key up in that store
        if is_complete(out):
            mark_used(out)  # what `lmpipe gc` keeps: artifacts a run looked up lately
        else:
            forget_cached_result(store, key)
        return key

    return dict(cache_key_fn=cache_key, persist_result=True, result_serializer="json")


def build_stage(
    out: Path, stage: str, inputs: dict[str, Any], build: Callable[[Path, Log], object], log: Log | None = None
) -> str:
    """A stage task's body: publish `out` with `build(scratch, log)` unless it is already complete, logging
    to the task run (or to `log`, outside one); returns the artifact's reference, which is what a task hands on.
    `inputs` names upstream artifacts by reference (artifact_ref), so the manifest holds no mount point."""
    log = log or get_run_logger()
    ensure_built(out, stage, inputs, lambda scratch: build(scratch, log), log)
    mark_used(out)
    return artifact_ref(out)


def cache_key_of(directory: Path) -> str:
    """Prefect cache key of an artifact directory: `lmpipe-<stage>-<key>`, the same on every mount point."""
    return f"lmpipe-{directory.parent.name}-{directory.name}"


def forget_cached_result(store: Any, key: str) -> None:
    """Make Prefect's record for `key` miss, whatever storage holds it, by overwriting it expired."""
    if store is None or not store.exists(key):
        return
    expired = store.create_result_record(None, key=key, expiration=datetime.now(timezone.utc) - timedelta(seconds=1))
    store.persist_result_record(expired)
