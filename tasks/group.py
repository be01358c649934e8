"""group: concatenate token ids and cut them into block_size blocks.

One blocks artifact per tokenized dataset and block size, read by whichever model trains on it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref

LIBRARIES = ("numpy", "pyarrow")  # the libraries that shape this stage's output


def group_output_dir(tokenize_dir: str, config: PipelineConfig) -> Path:
    inputs = {
        "upstream": Path(tokenize_dir).name,
        "block_size": config.data.block_size,
        "remainder": config.data.remainder,
        "code": code_version(__name__, LIBRARIES),
    }
    return artifact_dir(config.artifacts.root, "group", inputs)


@task(name="group", **cached_stage(group_output_dir))
def group(tokenize_dir: str, config: PipelineConfig) -> str:
    """Concatenate and cut into block_size blocks; returns the artifact's reference."""
    return build_group(tokenize_dir, config)


def build_group(tokenize_dir: str, config: PipelineConfig, log: Log | None = None) -> str:
    """The task's body, callable outside a flow run with a logger (bench/scale_bench.py)."""
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.data.blocks import group_dataset

    data = config.data
    upstream = artifact_path(config.artifacts.root, tokenize_dir)
    return build_stage(
        group_output_dir(tokenize_dir, config),
        "group",
        {"upstream": artifact_ref(upstream), "block_size": data.block_size, "remainder": data.remainder},
        lambda scratch, log: group_dataset(upstream, data.block_size, data.remainder, scratch, log),
        log,
    )
