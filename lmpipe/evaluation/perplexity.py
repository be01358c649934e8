"""Perplexity of the base and the trained model on the held-out test blocks.

Perplexity = exp(token-weighted mean loss). The Trainer's eval_loss averages per-batch means,
which over-weights a short last batch and padded blocks, and divides a causal LM's loss by one
token per block too many (lmpipe.models.loss); we sum the loss over every scored token instead.
MLM masking uses a fixed seed and a fresh collator per model, so base and trained models see the
same masks and one model always gets one number.

The causal LM also gets bits per byte, the same summed loss per byte of the scored text, which
compares across tokenizers (lmpipe.evaluation.bits_per_byte).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmpipe.compute.devices import plan_device, use_planned_threads
from lmpipe.config.schema import PipelineConfig
from lmpipe.errors import PipelineInputError
from lmpipe.evaluation.bits_per_byte import bits_per_byte, scored_bytes
from lmpipe.evaluation.eval_set import count_test_blocks, eval_set_fingerprint, evenly_spaced
from lmpipe.models.base import auto_class, build_base_model
from lmpipe.models.batches import Collator, evaluation_batches
from lmpipe.models.loss import summed_token_loss
from lmpipe.objectives import Objective, spec_of

_log = logging.getLogger(__name__)


def perplexity_from_loss(loss: float) -> float:
    """exp(loss), with the overflow guard run_clm.py uses: a huge loss is infinite perplexity."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


@torch.no_grad()
def token_weighted_loss(
    model: PreTrainedModel,
    blocks: Dataset,
    collator: Collator,
    objective: Objective,
    batch_size: int,
    device: str,
) -> tuple[float, int]:
    """(mean loss per scored token, number of scored tokens)."""
    model.to(device).eval()
    features = blocks.select_columns([c for c in ("input_ids", "attention_mask") if c in blocks.column_names])
    loader = DataLoader(features, batch_size=batch_size, collate_fn=collator, shuffle=False)
    loss_sum, tokens = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (batch, block, vocab)
        batch_loss, batch_tokens = summed_token_loss(objective, logits, batch["labels"])
        loss_sum += batch_loss.item()
        tokens += int(batch_tokens)
    if tokens == 0:
        raise PipelineInputError("eval: the test blocks hold no token to predict; add data or lower data.block_size")
    return loss_sum / tokens, tokens


def test_blocks(blocks_dir: Path, config: PipelineConfig) -> Dataset:
    """The evaluation set: the test split of the grouped blocks, or eval.max_blocks of them evenly spaced over it."""
    test = load_from_disk(str(blocks_dir / "dataset"))["test"]
    indices = evenly_spaced(len(test), config.eval.max_blocks)
    if len(indices) < len(test):
        # An indices mapping over the memory-mapped blocks, held in memory: no data is copied, and
        # nothing is written into the (shared, manifested) blocks artifact.
        test = test.select(indices, keep_in_memory=True)
    return test


def model_bits_per_byte(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, blocks: Dataset, config: PipelineConfig, device: str
) -> float:
    """Bits per byte of one causal LM on `blocks` (its own tokenizer's ids)."""
    loss, tokens = model_eval_loss(model, tokenizer, blocks, config, "clm", device)
    collator = evaluation_batches("clm", tokenizer, config.train.mlm_probability, config.eval.mlm_seed)
    return bits_per_byte(loss, tokens, scored_bytes(blocks, tokenizer, collator, "clm", config.eval.batch_size))


def model_eval_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test: Dataset,
    config: PipelineConfig,
    objective: Objective,
    device: str,
) -> tuple[float, int]:
    """Token-weighted loss of one model on the evaluation set, with fresh fixed-seed MLM masks."""
    collator = evaluation_batches(objective, tokenizer, config.train.mlm_probability, config.eval.mlm_seed)
    try:
        return token_weighted_loss(model, test, collator, objective, config.eval.batch_size, device)
    finally:  # the flow's process: hand GPU memory back before the next trainer starts
        model.to("cpu")
        if device == "cuda":
            torch.cuda.empty_cache()


def evaluate_models(
    objective: Objective,
    model_dir: Path,
    blocks_dir: Path,
    config: PipelineConfig,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, Any]:
    """Perplexity of the trained model in model_dir and of the base model it started from."""
    plan = plan_device("fp32")  # evaluate in full precision: the number is what reviewers compare
    use_planned_threads(plan)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    test = test_blocks(blocks_dir, config)

    def loss_of(model: PreTrainedModel) -> tuple[float, int]:
        return model_eval_loss(model, tokenizer, test, config, objective, plan.device)

    trained_loss, tokens = loss_of(trained_model(objective, model_dir))
    model_config = getattr(config.model, objective)
    base = build_base_model(objective, model_config, tokenizer, config.train.seed, config.data.block_size)
    base_loss, _ = loss_of(base)
    metrics = {
        "objective": objective,
        "eval_loss": trained_loss,
        "perplexity": perplexity_from_loss(trained_loss),
        "base_eval_loss": base_loss,
        "base_perplexity": perplexity_from_loss(base_loss),
        "eval_tokens": tokens,
        "eval_blocks": len(test),
        "eval_blocks_total": count_test_blocks(blocks_dir),  # eval_blocks < this: eval.max_blocks bounded it
        "eval_set": eval_set_fingerprint(blocks_dir, config, objective),
    }
    if not spec_of(objective).masked:  # absent for a masked LM: see lmpipe.evaluation.bits_per_byte
        collator = evaluation_batches(objective, tokenizer, config.train.mlm_probability, config.eval.mlm_seed)
        eval_bytes = scored_bytes(test, tokenizer, collator, objective, config.eval.batch_size)
        metrics |= {
            "bits_per_byte": bits_per_byte(trained_loss, tokens, eval_bytes),
            "base_bits_per_byte": bits_per_byte(base_loss, tokens, eval_bytes),
            "eval_bytes": eval_bytes,
        }
    if not math.isfinite(metrics["perplexity"]):
        # Fail here, before any register task runs, so a diverged model registers nothing.
        raise PipelineInputError(
            f"evaluate: {objective} perplexity is {metrics['perplexity']} (eval loss {trained_loss}); training "
            "diverged, so nothing is registered (lower train.learning_rate?)"
        )
    limit = metrics["base_perplexity"] * config.eval.max_ratio_to_base
    if metrics["perplexity"] > limit:
        raise PipelineInputError(
            f"evaluate: {objective} perplexity {metrics['perplexity']:.2f} is worse than the base model's "
            f"{metrics['base_perplexity']:.2f} x eval.max_ratio_to_base={config.eval.max_ratio_to_base:g}, so nothing "
            "is registered (check train.learning_rate and the data)"
        )
    per_byte = ""
    if "bits_per_byte" in metrics:
        per_byte = (
            f", bits per byte {metrics['bits_per_byte']:.4f} (base {metrics['base_bits_per_byte']:.4f}) "
            f"over {metrics['eval_bytes']} bytes"
        )
    log.info(
        f"evaluate {objective}: perplexity {metrics['perplexity']:.2f} (base {metrics['base_perplexity']:.2f}) "
        f"over {tokens} tokens in {len(test)} test blocks{per_byte}"
    )
    return metrics


def trained_model(objective: Objective, model_dir: Path) -> PreTrainedModel:
    return auto_class(objective).from_pretrained(str(model_dir))
