"""evaluate: perplexity of the base and the trained model on the held-out test blocks.

Perplexity = exp(token-weighted mean loss). The Trainer's eval_loss averages per-batch means,
which over-weights a short last batch and padded blocks; we sum the loss over every predicted
token instead. MLM masking uses a fixed seed and a fresh collator per model, so base and
trained models see the same masks and one model always gets one number.

The model card's sampled outputs are made here too (samples.json beside metrics.json), on the
CPU: register then only reads them and never loads the model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, load_from_disk
from prefect import get_run_logger, task
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmpipe import model_card, models
from lmpipe.artifacts import artifact_dir, cached_stage, code_version, ensure_built, fingerprint
from lmpipe.config import Objective, PipelineConfig
from lmpipe.devices import plan_device, use_planned_threads
from lmpipe.errors import PipelineInputError
from tasks.group import IGNORE_INDEX

_log = logging.getLogger(__name__)
SAMPLES_FILE = "samples.json"  # the model card's sampled outputs, next to metrics.json


def perplexity_from_loss(loss: float) -> float:
    """exp(loss), with the overflow guard run_clm.py uses: a huge loss is infinite perplexity."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def eval_collator(
    objective: Objective, tokenizer: PreTrainedTokenizerBase, mlm_probability: float, mlm_seed: int
) -> DataCollatorForLanguageModeling:
    if objective == "clm":
        return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability, seed=mlm_seed)


@torch.no_grad()
def token_weighted_loss(
    model: PreTrainedModel,
    blocks: Dataset,
    collator: DataCollatorForLanguageModeling,
    objective: Objective,
    batch_size: int,
    device: str,
) -> tuple[float, int]:
    """(mean loss per predicted token, number of predicted tokens)."""
    model.to(device).eval()
    features = blocks.select_columns(["input_ids", "attention_mask"])
    loader = DataLoader(features, batch_size=batch_size, collate_fn=collator, shuffle=False)
    loss_sum, tokens = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (batch, block, vocab)
        labels = batch["labels"]  # (batch, block)
        if objective == "clm":  # token t predicts token t+1
            logits, labels = logits[:, :-1], labels[:, 1:]
        loss_sum += F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        tokens += int((labels != IGNORE_INDEX).sum())
    if tokens == 0:
        raise PipelineInputError("eval: the test blocks hold no token to predict; add data or lower data.block_size")
    return loss_sum / tokens, tokens


def test_blocks(blocks_dir: Path, config: PipelineConfig) -> Dataset:
    """The evaluation set: the test split of the grouped blocks, capped at eval.max_blocks."""
    test = load_from_disk(str(blocks_dir / "dataset"))["test"]
    if config.eval.max_blocks is not None:
        test = test.select(range(min(config.eval.max_blocks, len(test))))
    return test


def model_eval_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test: Dataset,
    config: PipelineConfig,
    objective: Objective,
    device: str,
) -> tuple[float, int]:
    """Token-weighted loss of one model on the evaluation set, with fresh fixed-seed MLM masks."""
    collator = eval_collator(objective, tokenizer, config.train.mlm_probability, config.eval.mlm_seed)
    try:
        return token_weighted_loss(model, test, collator, objective, config.eval.batch_size, device)
    finally:  # this runs in the worker: hand GPU memory back before the next trainer starts
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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    test = test_blocks(blocks_dir, config)

    def loss_of(model: PreTrainedModel) -> tuple[float, int]:
        return model_eval_loss(model, tokenizer, test, config, objective, plan.device)

    trained_loss, tokens = loss_of(trained_model(objective, model_dir))
    model_config = getattr(config.model, objective)
    base = models.build_base_model(objective, model_config, tokenizer, config.train.seed, config.data.block_size)
    base_loss, _ = loss_of(base)
    metrics = {
        "objective": objective,
        "eval_loss": trained_loss,
        "perplexity": perplexity_from_loss(trained_loss),
        "base_eval_loss": base_loss,
        "base_perplexity": perplexity_from_loss(base_loss),
        "eval_tokens": tokens,
        "eval_blocks": len(test),
        "eval_set": eval_set_fingerprint(blocks_dir, config, objective),
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
    log.info(
        f"evaluate {objective}: perplexity {metrics['perplexity']:.2f} (base {metrics['base_perplexity']:.2f}) "
        f"over {tokens} tokens in {len(test)} test blocks"
    )
    return metrics


def trained_model(objective: Objective, model_dir: Path) -> PreTrainedModel:
    return models.auto_class(objective).from_pretrained(str(model_dir))


def card_samples(
    objective: Objective,
    model_dir: Path,
    config: PipelineConfig,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> list[dict[str, Any]]:
    """The model card's sampled outputs, generated here with the evaluation rather than at registration.

    They describe how the model behaves, as the perplexity does; made here, a register retry never
    generates them again, and register never needs the model in memory (it logs the saved files).
    """
    started = time.perf_counter()
    # A tokenizer as saved (no pad token set for evaluation), as a reviewer would load it.
    model, tokenizer = trained_model(objective, model_dir), AutoTokenizer.from_pretrained(str(model_dir))
    samples = model_card.sample_outputs(objective, model, tokenizer, config.card)
    log.info(f"evaluate {objective}: {len(samples)} model-card samples in {time.perf_counter() - started:.1f} s")
    return samples


def eval_set_fingerprint(blocks_dir: Path, config: PipelineConfig, objective: Objective) -> str:
    """Identifies the exact evaluation set: two perplexities compare only when this matches.

    CLM: the test blocks and the cap. MLM adds what decides the masks: seed, probability and the
    batch size (the collator draws each batch's masks from one generator, in batch order).
    """
    identity: dict[str, Any] = {"blocks": Path(blocks_dir).name, "max_blocks": config.eval.max_blocks}
    if objective == "mlm":
        identity |= {
            "mlm_seed": config.eval.mlm_seed,
            "mlm_probability": config.train.mlm_probability,
            "batch_size": config.eval.batch_size,
        }
    return fingerprint(identity)


# ---------------------------------------------------------------------------- task


def evaluate_output_dir(model_dir: str, blocks_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "model": Path(model_dir).name,
        "eval_set": eval_set_fingerprint(Path(blocks_dir), config, objective),
        "batch_size": config.eval.batch_size,
        "card": config.card.model_dump(mode="json"),  # the samples are part of this artifact
        "code": code_version(__file__, models.__file__, model_card.__file__),
    }
    return artifact_dir(config.artifacts.root, f"evaluate-{objective}", inputs)


@task(name="evaluate", **cached_stage(evaluate_output_dir))
def evaluate(model_dir: str, blocks_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Perplexity of base and trained model on the test blocks, and the model card's samples.

    Returns the directory holding metrics.json and samples.json.
    """
    out = evaluate_output_dir(model_dir, blocks_dir, config, objective)
    log = get_run_logger()

    def build(scratch: Path) -> None:
        metrics = evaluate_models(objective, Path(model_dir), Path(blocks_dir), config, log)
        (scratch / "metrics.json").write_text(json.dumps(metrics, indent=2))
        # After the perplexity checks (a diverged model is never sampled). Loaded again, from the page
        # cache, rather than kept: the trained and base models are never in memory together.
        samples = card_samples(objective, Path(model_dir), config, log)
        (scratch / SAMPLES_FILE).write_text(json.dumps(samples, indent=2))

    ensure_built(out, "evaluate", {"model": model_dir, "blocks": blocks_dir}, build, log)
    return str(out)
