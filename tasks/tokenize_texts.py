"""tokenize: turn text into token ids with a fast tokenizer, pretrained or trained here.

With no pretrained tokenizer configured, a byte-level BPE is trained on the train split. It
carries every special token both objectives need (bos/eos for CLM, mask and pad for MLM), and
wraps each text as `<s> text </s>` so documents stay separated once group concatenates them.

The artifact is keyed by the tokenizer, not the objective, so CLM and MLM share one tokenized
dataset whenever they use the same tokenizer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, disable_caching, load_from_disk
from prefect import get_run_logger, task
from tokenizers import AddedToken, ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lmpipe.artifacts import artifact_dir, cached_stage, code_version, ensure_built, file_digest
from lmpipe.config import Objective, PipelineConfig
from lmpipe.devices import available_cores
from lmpipe.errors import PipelineInputError
from lmpipe.hub import is_local_reference, require_hub
from tasks.flatten import TEXT_COLUMN

_log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".gguf"}
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


# ---------------------------------------------------------------------------- which tokenizer


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
    if source is None:
        return {
            "trained_bpe": {"vocab_size": config.tokenizer.vocab_size, "min_frequency": config.tokenizer.min_frequency}
        }
    if is_local_reference(source):
        root = Path(source).expanduser()
        # A pretrained model's folder also holds its weights (often gigabytes): they don't shape the
        # tokenizer, so they are not hashed into its key.
        files = [f for f in sorted(root.rglob("*")) if f.is_file() and f.suffix not in WEIGHT_SUFFIXES]
        return {"local": {str(f.relative_to(root)): file_digest(f) for f in files}}
    return {"hub": source, "revision": revision}


# ---------------------------------------------------------------------------- building one


def _text_batches(texts: Dataset, batch_rows: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(texts), batch_rows):
        yield texts[start : start + batch_rows][TEXT_COLUMN]


def train_bpe_tokenizer(texts: Dataset, vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, with RoBERTa-style specials usable for CLM and MLM."""
    bpe = ByteLevelBPETokenizer()
    specials = [SPECIAL_TOKENS[k] for k in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token")]
    bpe.train_from_iterator(
        _text_batches(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
    )
    bpe.post_processor = RobertaProcessing(
        (SPECIAL_TOKENS["eos_token"], bpe.token_to_id(SPECIAL_TOKENS["eos_token"])),  # sep
        (SPECIAL_TOKENS["bos_token"], bpe.token_to_id(SPECIAL_TOKENS["bos_token"])),  # cls
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        # lstrip lets "a <mask> b" mask the word with its leading space, as RoBERTa does.
        **{**SPECIAL_TOKENS, "mask_token": AddedToken(SPECIAL_TOKENS["mask_token"], lstrip=True)},
    )


def load_pretrained_tokenizer(name_or_path: str, field: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    if not is_local_reference(name_or_path):
        require_hub(
            f"tokenizer {name_or_path!r}",
            field=field,
            alternatives="Point it at a local save_pretrained directory, or set it to null to train one here",
        )
    try:  # trust_remote_code=False, said explicitly, so transformers never asks on stdin
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except ValueError as error:  # a tokenizer that needs the repository's own code
        raise PipelineInputError(
            f"{field}={name_or_path!r}: {str(error).splitlines()[0]} (custom tokenizer code is never run)"
        ) from None
    if not tokenizer.is_fast:
        raise PipelineInputError(f"{field}={name_or_path!r} has no fast tokenizer; batched tokenization needs one")
    return tokenizer


def build_tokenizer(config: PipelineConfig, objective: Objective, train_texts: Dataset) -> PreTrainedTokenizerBase:
    source, revision, field = tokenizer_origin(config, objective)
    if source is None:
        return train_bpe_tokenizer(train_texts, config.tokenizer.vocab_size, config.tokenizer.min_frequency)
    return load_pretrained_tokenizer(source, field, revision)


# ---------------------------------------------------------------------------- tokenizing


class FastEncoder:
    """The tokenizer's Rust backend called directly, set up as `tokenizer(texts)` sets it up (special
    tokens added; no truncation: group concatenates and re-cuts, so nothing is lost, where the guide
    truncated and threw the tail of long answers away; no padding). It skips transformers' per-call
    Python layer and the offsets nobody reads: ~1.4x the throughput of `tokenizer(texts)` here
    (bench/tokenize_bench.py)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer)
        self.backend.no_truncation()
        self.backend.no_padding()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.backend.encode_batch_fast(texts, add_special_tokens=True)]


def encoder_for(tokenizer: PreTrainedTokenizerBase, sample: list[str]) -> Callable[[list[str]], list[list[int]]]:
    """FastEncoder when it gives exactly what `tokenizer(texts)` gives on `sample`; the tokenizer's own
    call otherwise (a tokenizer whose Python layer changes the ids must keep it)."""
    fast = FastEncoder(tokenizer)
    if fast(sample) == tokenizer(sample, verbose=False)["input_ids"]:
        return fast
    _log.warning("tokenize: the fast path differs from tokenizer(texts) on this tokenizer; using its own call")
    return _TransformersEncoder(tokenizer)


class _TransformersEncoder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, verbose=False)["input_ids"]


def _encode_batch(batch: pa.Table, encode: Callable[[list[str]], list[list[int]]]) -> pa.Table:
    ids = pa.array(encode(batch.column(TEXT_COLUMN).to_pylist()), type=pa.list_(pa.int32()))
    # Unpadded text attends to every token: the mask is all ones, built without a Python list.
    mask = pa.ListArray.from_arrays(ids.offsets, pa.array(np.ones(len(ids.values), dtype=np.int8)))
    return pa.table({"input_ids": ids, "attention_mask": mask})


def tokenize_splits(splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, num_proc: int) -> DatasetDict:
    """input_ids (int32) and attention_mask (int8) per row; every other column is dropped."""
    disable_caching()  # map() would write cache files into the upstream artifact; ours is the cache
    rows = min(len(splits[s]) for s in splits)
    encode = encoder_for(tokenizer, splits["train"][:64][TEXT_COLUMN])
    return (
        splits.with_format("arrow")
        .map(
            _encode_batch,
            batched=True,
            num_proc=max(1, min(num_proc, rows)),  # more processes than rows only costs start-up time
            fn_kwargs={"encode": encode},
            remove_columns=splits["train"].column_names,
            desc="tokenize",
        )
        .with_format(None)
    )


def tokenize_dataset(
    flat_dir: Path,
    config: PipelineConfig,
    objective: Objective,
    out_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> DatasetDict:
    splits = load_from_disk(str(flat_dir / "dataset"))
    tokenizer = build_tokenizer(config, objective, splits["train"])
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    num_proc = config.data.num_proc or min(available_cores(), 4)
    tokenized, tokens = tokenize_and_save(splits, tokenizer, num_proc, out_dir / "dataset")
    source = tokenizer_source(config, objective) or f"BPE trained here (vocab {len(tokenizer)})"
    log.info(f"tokenize: {source}; tokens {tokens} with {num_proc} processes")
    return tokenized


def tokenize_and_save(
    splits: DatasetDict, tokenizer: PreTrainedTokenizerBase, num_proc: int, dataset_dir: Path
) -> tuple[DatasetDict, dict[str, int]]:
    """The stage's work once the tokenizer exists (what bench/tokenize_bench.py times): token ids
    written as Arrow to dataset_dir, and the token count per split."""
    tokenized = tokenize_splits(splits, tokenizer, num_proc)
    tokenized.save_to_disk(str(dataset_dir))
    # Counted from Arrow's list lengths: the ids never become Python lists (a 1 GB corpus would not fit).
    return tokenized, {split: total_tokens(tokenized[split]) for split in tokenized}


def total_tokens(tokenized: Dataset) -> int:
    lengths = pc.list_value_length(tokenized.data.column("input_ids"))
    return int(pc.sum(lengths).as_py() or 0)


# ---------------------------------------------------------------------------- task


def tokenize_output_dir(flat_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    # The objective is deliberately absent: one tokenizer -> one artifact, shared by CLM and MLM.
    inputs = {
        "upstream": Path(flat_dir).name,
        "tokenizer": tokenizer_identity(config, objective),
        "code": code_version(__file__),
    }
    return artifact_dir(config.artifacts.root, "tokenize", inputs)


@task(name="tokenize", **cached_stage(tokenize_output_dir))
def tokenize(flat_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Tokenize the text column (training a BPE first if no tokenizer is given); returns the artifact directory."""
    out = tokenize_output_dir(flat_dir, config, objective)
    log = get_run_logger()
    ensure_built(
        out,
        "tokenize",
        {"upstream": flat_dir, "tokenizer": tokenizer_identity(config, objective)},
        lambda scratch: tokenize_dataset(Path(flat_dir), config, objective, scratch, log),
        log,
    )
    return str(out)
