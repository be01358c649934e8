"""A shim for one MLflow + transformers 5 incompatibility, kept apart so it is easy to delete.

MLflow 3.17 logs a local checkpoint (`mlflow.transformers.log_model(transformers_model=<dir>)`)
by reading `transformers.pipelines.check_task(task)[1]["impl"].__name__`; transformers 5 keeps
`impl` as a dotted-path string, so it fails with "'str' object has no attribute '__name__'".
tests/unit/registry/test_mlflow_compat.py fails once MLflow no longer needs this.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_depth = 0  # registers overlapping in one process (the both flow): installed by the first, removed by the last


@contextmanager
def pipeline_classes_resolved() -> Iterator[None]:
    """While inside, check_task answers with a copy whose impl is the pipeline class itself.

    transformers' own `pipeline()` accepts a class or a string there, so a pipeline built
    concurrently is unaffected; an impl that already is a class is passed through unchanged.
    """
    from transformers import pipelines

    global _depth
    with _lock:
        if _depth == 0:
            pipelines.check_task = _resolving(pipelines.check_task)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                pipelines.check_task = pipelines.check_task.original


def _resolving(original: Any) -> Any:
    def check_task(task: str) -> tuple[str, dict[str, Any], Any]:
        normalized, targeted, options = original(task)
        if isinstance(targeted.get("impl"), str):
            module, _, name = targeted["impl"].rpartition(".")
            targeted = {**targeted, "impl": getattr(importlib.import_module(module), name)}
        return normalized, targeted, options

    check_task.original = original  # type: ignore[attr-defined]
    return check_task
