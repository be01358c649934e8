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


# Files that hold a model's weights, one of which a local model directory needs.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Sets of files that make a tokenizer: a fast tokenizer's one file, or a slow tokenizer's vocabulary.
TOKENIZER_FILES = (
    ("tokenizer.json",),
    ("vocab.json", "merges.txt"),
    ("vocab.txt",),
    ("tokenizer.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
)


def looks_like_a_path(name_or_path: str) -> bool:
    """A local path rather than a Hub id ('gpt2', 'org/name'): it exists, or it can only be a path."""
    if Path(name_or_path).expanduser().exists():
        return True
    return name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1


def local_config_of(pretrained: str | None) -> dict[str, Any] | None:
    """config.json of a local `pretrained` directory; None for a Hub id (read when the model loads).
    A config.json that is not a JSON object is a ValueError naming the file."""
    if pretrained is None:
        return None
    config_file = Path(pretrained).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a JSON {type(config).__name__}, not an object")
    return config


def local_model_problem(directory: Path) -> str | None:
    """None when `directory` holds a model transformers can load (config.json and weights); else what is missing."""
    if not directory.is_dir():
        return f"{directory} does not exist" if not directory.exists() else f"{directory} is a file, not a directory"
    if not (directory / "config.json").is_file():
        return f"{directory} has no config.json (a save_pretrained directory has one)"
    local_config_of(str(directory))  # raises, naming the file, if it does not parse
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        return f"{directory} has no weights ({' or '.join(WEIGHT_FILES[::2])})"
    return None


def local_tokenizer_problem(directory: Path) -> str | None:
    """None when `directory` holds a tokenizer's files; else what is missing."""
    if not directory.is_dir():
        return f"{directory} does not exist" if not directory.exists() else f"{directory} is a file, not a directory"
    if not any(all((directory / name).is_file() for name in files) for files in TOKENIZER_FILES):
        return f"{directory} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt, or vocab.txt)"
    return None


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
