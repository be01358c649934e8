"""evaluate: perplexity of the base and the trained model on the held-out blocks, and the card's samples."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from lmpipe.config.schema import PipelineConfig
from lmpipe.evaluation.eval_set import eval_set_fingerprint
from lmpipe.objectives import Objective
from lmpipe.orchestration.caching import Log, build_stage, cached_stage
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref

LIBRARIES = ("torch", "transformers")  # the libraries that shape this stage's output


def evaluate_output_dir(model_dir: str, blocks_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "model": Path(model_dir).name,
        "eval_set": eval_set_fingerprint(artifact_path(config.artifacts.root, blocks_dir), config, objective),
        "batch_size": config.eval.batch_size,
        "card": config.card.model_dump(mode="json"),  # the samples are part of this artifact
        "code": code_version(__name__, LIBRARIES),
    }
    return artifact_dir(config.artifacts.root, f"evaluate-{objective}", inputs)


@task(name="evaluate", **cached_stage(evaluate_output_dir))
def evaluate(model_dir: str, blocks_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Perplexity of base and trained model on the test blocks, and the model card's samples.

    Returns the reference of the artifact holding metrics.json and samples.json.
    """
    # Imported here, not at the top: a cached run computes keys only, and never loads the work's libraries.
    from lmpipe.evaluation.report import write_evaluation
    from lmpipe.store.manifest import require_intact

    model, blocks = artifact_path(config.artifacts.root, model_dir), artifact_path(config.artifacts.root, blocks_dir)

    def build(scratch: Path, log: Log) -> None:
        require_intact(blocks, "dataset/test/")  # the blocks it scores, checked before a model sees them
        require_intact(model)  # and the model scored: what register hands to review
        write_evaluation(objective, model, blocks, config, scratch, log)

    return build_stage(
        evaluate_output_dir(model_dir, blocks_dir, config, objective),
        "evaluate",
        {"model": artifact_ref(model), "blocks": artifact_ref(blocks)},
        build,
    )
