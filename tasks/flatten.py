"""flatten: nested columns become dotted columns; the text field is joined into one string per row."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref

LIBRARIES = ("datasets", "pyarrow")  # the libraries that shape this stage's output


def flatten_output_dir(download_dir: str, config: PipelineConfig) -> Path:
    inputs = {
        "upstream": Path(download_dir).name,
        "text_field": config.data.text_field,
        "code": code_version(__name__, LIBRARIES),
    }
    return artifact_dir(config.artifacts.root, "flatten", inputs)


@task(name="flatten", **cached_stage(flatten_output_dir))
def flatten(download_dir: str, config: PipelineConfig) -> str:
    """Flatten nested columns and join the text field; returns the artifact's reference."""
    return build_flatten(download_dir, config)


def build_flatten(download_dir: str, config: PipelineConfig, log: Log | None = None) -> str:
    """The task's body, callable outside a flow run with a logger (bench/scale_bench.py)."""
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.data.flatten import flatten_dataset

    field = config.data.text_field
    upstream = artifact_path(config.artifacts.root, download_dir)
    return build_stage(
        flatten_output_dir(download_dir, config),
        "flatten",
        {"upstream": artifact_ref(upstream), "text_field": field},
        lambda scratch, log: flatten_dataset(upstream, field, scratch, log),
        log,
    )
