"""Which tokenizer a model reads, which config field chose it, and what identifies it in a cache key.

Cheap to import (no transformers): a cached run computes keys without loading a tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmpipe.config.schema import PipelineConfig
from lmpipe.data.hub import is_local_reference
from lmpipe.store.keys import file_digest

if TYPE_CHECKING:  # a type only: which objective is in the key, not the table's code
    from lmpipe.objectives import Objective

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".gguf"}


class TokenizerOrigin(NamedTuple):
    source: str | None  # name or path; None means "train one here"
    revision: str | None  # Hub revision, when source is a Hub id
    field: str  # the config field that named it, for error messages


def tokenizer_origin(config: PipelineConfig, objective: Objective) -> TokenizerOrigin:
    """Which tokenizer `objective` uses, at which revision, and which config field chose it."""
    model = getattr(config.model, objective)
    if model.tokenizer:
        return TokenizerOrigin(model.tokenizer, model.tokenizer_revision, f"model.{objective}.tokenizer")
    if model.pretrained:
        return TokenizerOrigin(model.pretrained, model.revision, f"model.{objective}.pretrained")
    if config.tokenizer.pretrained:
        return TokenizerOrigin(config.tokenizer.pretrained, config.tokenizer.revision, "tokenizer.pretrained")
    return TokenizerOrigin(None, None, "tokenizer.pretrained")


def tokenizer_source(config: PipelineConfig, objective: Objective) -> str | None:
    """Name or path of the tokenizer for `objective`; None means 'train one here'."""
    return tokenizer_origin(config, objective).source


def tokenizer_identity(config: PipelineConfig, objective: Objective) -> dict[str, Any]:
    source, revision, _ = tokenizer_origin(config, objective)
    if source is None:  # the sample's budget shapes a trained BPE only: a pretrained one ignores it
        settings = config.tokenizer
        return {
            "trained_bpe": {
                "vocab_size": settings.vocab_size,
                "min_frequency": settings.min_frequency,
                "train_sample": settings.train_sample.model_dump(),
            }
        }
    if is_local_reference(source):
        root = Path(source).expanduser()
        # A pretrained model's folder also holds its weights (often gigabytes): they don't shape the
        # tokenizer, so they are not hashed into its key.
        files = [f for f in sorted(root.rglob("*")) if f.is_file() and f.suffix not in WEIGHT_SUFFIXES]
        return {"local": {str(f.relative_to(root)): file_digest(f) for f in files}}
    return {"hub": source, "revision": revision}
