"""A shim for one MLflow + transformers 5 incompatibility, kept apart so it is easy to delete.

MLflow 3.17 logs a local checkpoint (`mlflow.transformers.log_model(transformers_model=<dir>)`)
by reading `transformers.pipelines.check_task(task)[1]["impl"].__name__`; transformers 5 keeps
`impl` as a dotted-path string, so it fails with "'str' object has no attribute '__name__'".
tests/unit/registry/test_mlflow_compat.py fails once MLflow no longer needs this.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any

from lmpipe.registry.shared_patch import SharedPatch


def pipeline_classes_resolved() -> AbstractContextManager[None]:
    """While inside, check_task answers with a copy whose impl is the pipeline class itself.

    transformers' own `pipeline()` accepts a class or a string there, so a pipeline built
    concurrently is unaffected; an impl that already is a class is passed through unchanged.
    """
    return _CHECK_TASK.applied()


def _resolving(original: Any) -> Any:
    def check_task(task: str) -> tuple[str, dict[str, Any], Any]:
        normalized, targeted, options = original(task)
        if isinstance(targeted.get("impl"), str):
            module, _, name = targeted["impl"].rpartition(".")
            targeted = {**targeted, "impl": getattr(importlib.import_module(module), name)}
        return normalized, targeted, options

    return check_task


_CHECK_TASK = SharedPatch("transformers.pipelines", "check_task", _resolving)
