"""What a pretrained model's config.json allows: how long a block it takes, and whether it can be
trained for an objective by transformers' own classes.

Only the library's built-in architectures are accepted. A model type transformers does not know
would need the repository's own Python code (remote code), which this pipeline never
runs: a model repository must not be able to execute code on a worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmpipe.objectives import Objective, spec_of

# RoBERTa-style models number positions from padding_idx + 1, so that many are never usable.
POSITIONS_FROM_PADDING = ("roberta", "xlm-roberta", "camembert", "longformer")


def local_config_of(pretrained: str | None) -> dict[str, Any] | None:
    """config.json of a local `pretrained` directory; None for a Hub id (read when the model loads)."""
    if pretrained is None:
        return None
    config_file = Path(pretrained).expanduser() / "config.json"
    return json.loads(config_file.read_text()) if config_file.is_file() else None


def max_positions_of(pretrained: str | None, scratch_positions: int) -> int | None:
    """Longest block a model can take (`scratch_positions` when built from scratch); None when it
    cannot be known without the network."""
    if pretrained is None:
        return scratch_positions
    config = local_config_of(pretrained)
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
    import transformers.models.auto.modeling_auto as heads  # here, not at the top: config loading stays fast
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    spec = spec_of(objective)
    model_type = model_config.get("model_type")
    if model_type in getattr(heads, spec.head_mapping):
        return None
    if model_type not in CONFIG_MAPPING_NAMES:
        return (
            f"model type {model_type!r} is unknown to transformers {__version__}; custom model code is never "
            "run (trust_remote_code is not supported)"
        )
    kind = spec.head_kind
    return f"model type {model_type!r} has no {kind} LM head in transformers; use a {kind} LM for {objective}"
