"""The promise of `make run`: the embedded default trains both models well, offline, via the script entry point.

Runs `python flows/both.py --config configs/default.yaml` as a user would (its own temporary Prefect
server, a real MLflow SQLite store), then holds both models to the bar: test perplexity at most 1/5
of the untrained base model's. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from lmpipe.cli.services import PROJECT_ROOT

# In e2e, collected first: the longest test starts at once on one pytest worker while the other runs the rest.
pytestmark = pytest.mark.e2e


def test_default_config_trains_both_models_to_a_fifth_of_base_perplexity(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)  # its own temporary server, as for a user
    completed = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "flows" / "both.py"),
            "--config",
            str(PROJECT_ROOT / "configs" / "default.yaml"),
            "--set",
            f"artifacts.root={tmp_path / 'artifacts'}",
            "--set",
            f"registry.tracking_uri={uri}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    # The summary table a user reads at the end.
    summary = completed.stdout[completed.stdout.index("base perplexity") :]
    assert "eli5-clm" in summary and "eli5-mlm" in summary
    assert f"mlflow ui --backend-store-uri {uri}" in summary

    client = MlflowClient(uri)
    versions = {
        m.name: [int(v.version) for v in client.search_model_versions(f"name = '{m.name}'")]
        for m in client.search_registered_models()
    }
    assert versions == {"eli5-clm": [1], "eli5-mlm": [1]}
    for objective in ("clm", "mlm"):
        (registration_file,) = (tmp_path / "artifacts" / f"register-{objective}").glob("*/registration.json")
        registration = json.loads(registration_file.read_text())
        ratio = registration["base_perplexity"] / registration["perplexity"]
        print(
            f"{objective}: perplexity {registration['perplexity']:.2f}, base {registration['base_perplexity']:.2f}, "
            f"ratio {ratio:.1f}"
        )
        assert ratio >= 5, f"{objective} did not learn enough: {registration}"
