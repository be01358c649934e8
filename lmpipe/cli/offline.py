"""The environment of local runs: offline, private, and patient with a busy machine.

Set before prefect, mlflow or Hugging Face libraries are imported; a value the user set wins.
"""

from __future__ import annotations

import os

# No network here, and no phoning home in local runs.
OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # progress is logged by the tasks instead
    # A bar per small file (a card read back by `lmpipe review`) would push lmpipe's one line off the screen.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",  # tokenize parallelises with processes; threads would oversubscribe
}


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
