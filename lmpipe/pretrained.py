"""What a pretrained model's config.json allows: how long a block it takes, and whether it can be
trained for an objective by transformers' own classes.

Only the library's built-in architectures are accepted. A model type transformers does not know
would need the repository's own Python code (remote code), which this pipeline never
runs: a model repository must not be able to execute code on a worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmpipe.config import ModelConfig, Objective

# RoBERTa-style models number positions from padding_idx + 1, so that many are never usable.
POSITIONS_FROM_PADDING = ("roberta", "xlm-roberta", "camembert", "longformer")


def local_config_of(model: ModelConfig) -> dict[str, Any] | None:
    """config.json of a local `pretrained` directory; None for a Hub id (read when the model loads)."""
    if model.pretrained is None:
        return None
    config_file = Path(model.pretrained).expanduser() / "config.json"
    return json.loads(config_file.read_text()) if config_file.is_file() else None


def max_positions_of(model: ModelConfig) -> int | None:
    """Longest block a model can take; None when it cannot be known without the network."""
    if model.pretrained is None:
        return model.max_positions
    config = local_config_of(model)
    return usable_positions(config) if config is not None else None


def usable_positions(model_config: dict[str, Any]) -> int | None:
    """Tokens per sequence a model config allows (a config.json as a dict); None if it does not say."""
    positions = model_config.get("n_positions") or model_config.get("max_position_embeddings")
    if positions is None:
        return None
    if model_config.get("model_type") in POSITIONS_FROM_PADDING:
        positions -= (model_config.get("pad_token_id") or 1) + 1
    return int(positions)


def objective_problem(objective: Objective, model_config: dict[str, Any]) -> str | None:
    """None when transformers has a built-in class to train this model for `objective`; else why not."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = model_config.get("model_type")
    trainable = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if objective == "clm" else MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if model_type in trainable:
        return None
    if model_type not in CONFIG_MAPPING_NAMES:
        return (
            f"model type {model_type!r} is unknown to transformers {__version__}; custom model code is never "
            "run (trust_remote_code is not supported)"
        )
    kind = "causal" if objective == "clm" else "masked"
    return f"model type {model_type!r} has no {kind} LM head in transformers; use a {kind} LM for {objective}"
