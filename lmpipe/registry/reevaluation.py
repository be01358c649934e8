"""The gate's `reevaluate`: a registered champion measured on this run's evaluation set, by the evaluate task's code.

Used only when the champion was evaluated on another set (lmpipe.registry.promotion): its perplexity on
this run's set when it reads the same tokenizer, else (a causal LM) its bits per byte on the set's text.
"""

from __future__ import annotations

from pathlib import Path

from lmpipe.compute.devices import plan_device
from lmpipe.config.schema import PipelineConfig
from lmpipe.evaluation.perplexity import model_bits_per_byte, model_eval_loss, perplexity_from_loss, test_blocks
from lmpipe.objectives import Objective
from lmpipe.registry.promotion import BITS_PER_BYTE, Metric


def registered_perplexity_on(
    name: str, version: int, blocks_dir: Path, config: PipelineConfig, objective: Objective
) -> float:
    """Perplexity of a registered version on this run's evaluation set (same code as evaluate)."""
    import mlflow

    components = mlflow.transformers.load_model(f"models:/{name}/{version}", return_type="components")
    tokenizer = components["tokenizer"]
    loss, _ = model_eval_loss(
        components["model"], tokenizer, test_blocks(blocks_dir, config), config, objective, plan_device("fp32").device
    )
    return perplexity_from_loss(loss)


def registered_bits_per_byte_on(
    name: str, version: int, model_dir: Path, blocks_dir: Path, config: PipelineConfig
) -> float:
    """Bits per byte of a registered causal LM that reads another tokenizer, on the text of this run's evaluation
    set: the test blocks decoded with this run's tokenizer, re-tokenized with its own
    (lmpipe.evaluation.other_tokenizer)."""
    import mlflow
    from transformers import AutoTokenizer

    from lmpipe.evaluation.other_tokenizer import retokenized_blocks

    components = mlflow.transformers.load_model(f"models:/{name}/{version}", return_type="components")
    model, tokenizer = components["model"], components["tokenizer"]
    # Its blocks are as long as those it was trained on: positions past them never learnt anything.
    trained_on = mlflow.MlflowClient().get_model_version(name, str(version)).tags.get("data.block_size")
    positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    block_size = min(int(trained_on or config.data.block_size), positions)
    ours = AutoTokenizer.from_pretrained(str(model_dir))
    blocks = retokenized_blocks(test_blocks(blocks_dir, config), ours, tokenizer, block_size)
    return model_bits_per_byte(model, tokenizer, blocks, config, plan_device("fp32").device)


def registered_metric_on(
    name: str,
    version: int,
    metric: Metric,
    model_dir: Path,
    blocks_dir: Path,
    config: PipelineConfig,
    objective: Objective,
) -> float:
    """The gate's `reevaluate`: a registered version's perplexity on this run's set, or bits per byte on its text."""
    if metric == BITS_PER_BYTE:
        return registered_bits_per_byte_on(name, version, model_dir, blocks_dir, config)
    return registered_perplexity_on(name, version, blocks_dir, config, objective)
