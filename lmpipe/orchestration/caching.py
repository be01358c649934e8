"""Prefect's cache, keyed by each stage's content-addressed artifact directory.

A stage returns the path of its artifact, never the data, and its Prefect cache key is derived
from that path. Before every lookup the key function checks the directory is still there and
complete; if it is not (deleted, or a failed build), it expires Prefect's record, so the stage
runs again instead of returning a stale path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from lmpipe.store.keys import fingerprint
from lmpipe.store.manifest import is_complete
from lmpipe.store.publish import ensure_built

Log = logging.Logger | logging.LoggerAdapter


def cached_stage(output_dir_of: Callable[..., Path]) -> dict[str, Any]:
    """Task options that key Prefect's cache by the stage's artifact directory.

    `output_dir_of` takes the task's parameters and returns its output directory.
    """

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        out = output_dir_of(**parameters)
        key = cache_key_of(out)
        if not is_complete(out):
            forget_cached_result(getattr(context, "result_store", None), key)
        return key

    return dict(cache_key_fn=cache_key, persist_result=True, result_serializer="json")


def build_stage(
    out: Path, stage: str, inputs: dict[str, Any], build: Callable[[Path, Log], object], log: Log | None = None
) -> str:
    """A stage task's body: publish `out` with `build(scratch, log)` unless it is already complete, logging
    to the task run (or to `log`, outside one); returns the artifact's path, which is what a task hands on."""
    log = log or get_run_logger()
    ensure_built(out, stage, inputs, lambda scratch: build(scratch, log), log)
    return str(out)


def cache_key_of(directory: Path) -> str:
    """Prefect cache key of an artifact directory: stage name plus a hash of its full path."""
    return f"lmpipe-{directory.parent.name}-{fingerprint(str(directory))}"


def forget_cached_result(store: Any, key: str) -> None:
    """Make Prefect's record for `key` miss, whatever storage holds it, by overwriting it expired."""
    if store is None or not store.exists(key):
        return
    expired = store.create_result_record(None, key=key, expiration=datetime.now(timezone.utc) - timedelta(seconds=1))
    store.persist_result_record(expired)
