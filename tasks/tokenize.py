"""tokenize: turn text into token ids with a fast tokenizer, pretrained or trained here.

Keyed by the tokenizer, not the objective: CLM and MLM share one artifact when they share a tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.data.tokenizer_choice import tokenizer_identity
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref

if TYPE_CHECKING:  # a type only: which objective is in the key, not the table's code
    from lmpipe.objectives import Objective

LIBRARIES = ("tokenizers", "transformers", "datasets", "pyarrow")  # the libraries that shape this stage's output


def tokenize_output_dir(flat_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    # The objective is deliberately absent: one tokenizer -> one artifact, shared by CLM and MLM.
    inputs = {
        "upstream": Path(flat_dir).name,
        "tokenizer": tokenizer_identity(config, objective),
        "code": code_version(__name__, LIBRARIES),
    }
    return artifact_dir(config.artifacts.root, "tokenize", inputs)


@task(name="tokenize", **cached_stage(tokenize_output_dir))
def tokenize(flat_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Tokenize the text column (training a BPE first if no tokenizer is given); returns the artifact's reference."""
    return build_tokenize(flat_dir, config, objective)


def build_tokenize(flat_dir: str, config: PipelineConfig, objective: Objective, log: Log | None = None) -> str:
    """The task's body, callable outside a flow run with a logger (bench/scale_bench.py)."""
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.data.tokenize import tokenize_dataset

    upstream = artifact_path(config.artifacts.root, flat_dir)
    return build_stage(
        tokenize_output_dir(flat_dir, config, objective),
        "tokenize",
        {"upstream": artifact_ref(upstream), "tokenizer": tokenizer_identity(config, objective)},
        lambda scratch, log: tokenize_dataset(upstream, config, objective, scratch, log),
        log,
    )
