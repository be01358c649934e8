"""A module attribute replaced while any caller is inside, and restored when the last one leaves.

Both MLflow shims (mlflow_compat, checkpoint_staging) need this: registers overlap in one process
(the both flow registers two models), so the first one in installs the replacement, and only the
last one out puts the original back.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class SharedPatch:
    def __init__(self, module: str, attribute: str, replacement: Callable[[Any], Any]) -> None:
        """`replacement(original)` is what `module.attribute` holds while installed."""
        self._module, self._attribute, self._replacement = module, attribute, replacement
        self._lock = threading.Lock()
        self._depth = 0  # callers inside
        self._original: Any = None

    @contextmanager
    def applied(self) -> Iterator[None]:
        module = importlib.import_module(self._module)
        with self._lock:
            if self._depth == 0:
                self._original = getattr(module, self._attribute)
                setattr(module, self._attribute, self._replacement(self._original))
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    setattr(module, self._attribute, self._original)
