"""Every error type the pipeline raises on purpose, and which of them mean "the input is wrong".

Input errors are reported in one line naming the field, and never retried: the same input
fails the same way again. Everything else (a lost connection, a full disk) may be transient.
"""


class ConfigError(ValueError):
    """A config that cannot run, found before any work starts; one line naming the field and the value."""


class PreflightFailed(ConfigError):
    """The run cannot succeed, found by the pre-flight before any stage ran (a dead tracking server, a
    missing path); like a config error, nothing was started, and the message names the field."""


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

# MLflow's answers that mean "this request is wrong", by their error codes (MlflowException.error_code,
# matched by name so this module imports no MLflow): asking again gets the same answer.
MLFLOW_INPUT_ERROR_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"}
)


def is_input_error(exception: BaseException | None) -> bool:
    if isinstance(exception, INPUT_ERRORS):
        return True
    return getattr(exception, "error_code", None) in MLFLOW_INPUT_ERROR_CODES
