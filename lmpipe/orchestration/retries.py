"""Which task failures Prefect retries: I/O hiccups, never inputs that would fail the same way again."""

from __future__ import annotations

from typing import Any

from lmpipe.errors import is_input_error


def retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry unless the task raised an input error."""
    try:
        state.result()
    except Exception as exception:  # noqa: BLE001 - we classify whatever the task raised
        return not is_input_error(exception)
    return False
