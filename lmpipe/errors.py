"""Every error type the pipeline raises on purpose, and which of them mean "the input is wrong".

Input errors are reported in one line naming the field, and never retried: the same input
fails the same way again. Everything else (a lost connection, a full disk) may be transient.
"""


class ConfigError(ValueError):
    """A config that cannot run, found before any work starts; one line naming the field and the value."""


class PipelineInputError(ValueError):
    """Bad data or config found while running; the message names the field and the problem."""


class HubUnreachableError(RuntimeError):
    """The Hugging Face Hub is needed and cannot be reached; the message names the alternatives."""


class TrainingFailed(RuntimeError):
    """The training process exited non-zero; the message carries the end of its output."""


class TemporaryServerFailed(RuntimeError):
    """The temporary Prefect server a local run needs did not come up; the message says what to do instead."""


# PermissionError: a folder or file the run may not write or read (a read-only artifacts root, say) stays
# so on a retry; waiting for it only delays the one line that says which path.
INPUT_ERRORS = (ConfigError, PipelineInputError, HubUnreachableError, PermissionError)


def is_input_error(exception: BaseException | None) -> bool:
    return isinstance(exception, INPUT_ERRORS)
