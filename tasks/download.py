"""download: read the corpus (builtin, local files or the Hub) and split it into train/test by a hash of each text."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.data.sources import source_identity
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.orchestration.retries import retry_unless_input_error
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir

LIBRARIES = ("datasets", "pyarrow")  # the libraries that shape this stage's output


def download_output_dir(config: PipelineConfig) -> Path:
    data = config.data
    inputs = {
        "source": data.source,
        "identity": source_identity(data, config.artifacts.root),
        "text_field": data.text_field,  # the split hashes each row's text
        "test_size": data.test_size,
        "seed": data.seed,
        "code": code_version(__name__, LIBRARIES),
    }
    return artifact_dir(config.artifacts.root, "download", inputs)


@task(
    name="download",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_input_error,
    **cached_stage(download_output_dir),
)
def download(config: PipelineConfig) -> str:
    """Fetch the corpus and save a train/test split; returns the artifact's reference."""
    return build_download(config)


def build_download(config: PipelineConfig, log: Log | None = None) -> str:
    """The task's body, callable outside a flow run with a logger (bench/scale_bench.py)."""
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.data.download import download_dataset
    from lmpipe.data.hub_revision import hub_revision_for_download

    record = {"data": config.data.model_dump()}
    if config.data.source == "hub":  # the commit the key names and the download reads, for the version's lineage
        record["hub_commit"] = hub_revision_for_download(config.data)
    return build_stage(
        download_output_dir(config),
        "download",
        record,
        lambda scratch, log: download_dataset(config.data, scratch, log),
        log,
    )
