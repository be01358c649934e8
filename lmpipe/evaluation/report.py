"""What the evaluate stage writes, and how register reads it back: metrics.json and samples.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lmpipe.config.schema import PipelineConfig
from lmpipe.errors import PipelineInputError
from lmpipe.evaluation.perplexity import evaluate_models
from lmpipe.evaluation.samples import card_samples
from lmpipe.objectives import Objective

METRICS_FILE = "metrics.json"  # perplexities (CLM: and bits per byte) and the evaluation set they were measured on
SAMPLES_FILE = "samples.json"  # the model card's sampled outputs

_log = logging.getLogger(__name__)


def write_evaluation(
    objective: Objective,
    model_dir: Path,
    blocks_dir: Path,
    config: PipelineConfig,
    out_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, Any]:
    """The evaluate stage: metrics of the trained and the base model, then the card's samples; returns the metrics."""
    metrics = evaluate_models(objective, model_dir, blocks_dir, config, log)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    # After the perplexity checks (a diverged model is never sampled). Loaded again, from the page
    # cache, rather than kept: the trained and base models are never in memory together.
    samples = card_samples(objective, model_dir, config, log)
    (out_dir / SAMPLES_FILE).write_text(json.dumps(samples, indent=2))
    return metrics


def read_metrics(eval_dir: Path) -> dict[str, Any]:
    return json.loads((eval_dir / METRICS_FILE).read_text())


def read_samples(eval_dir: Path) -> list[dict[str, Any]]:
    """The samples evaluate generated for the card: register never loads the model to make them."""
    samples_file = eval_dir / SAMPLES_FILE
    if not samples_file.is_file():
        raise PipelineInputError(f"register: {samples_file} is missing; re-run evaluate (its artifact is incomplete)")
    return json.loads(samples_file.read_text())
