"""Errors that mean 'the input is wrong': reported in one line, never retried."""


class PipelineInputError(ValueError):
    """Bad data or config found while running; the message names the field and the problem."""


def is_input_error(exception: BaseException | None) -> bool:
    from lmpipe.config import ConfigError
    from lmpipe.hub import HubUnreachableError

    return isinstance(exception, (PipelineInputError, ConfigError, HubUnreachableError))


def retry_unless_input_error(_task, _task_run, state) -> bool:
    """Prefect retry_condition_fn: retry I/O hiccups, but not inputs that will fail the same way again."""
    try:
        state.result()
    except Exception as exception:  # noqa: BLE001 - we classify whatever the task raised
        return not is_input_error(exception)
    return False
