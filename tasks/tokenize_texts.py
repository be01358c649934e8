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
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value, load_from_disk
from prefect import get_run_logger, task
from tokenizers import AddedToken, ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lmpipe.arrow_stream import logged_progress, map_dataset_dict, read_batches
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


def text_batches(split_dir: Path, batch_rows: int = 1000) -> Iterator[list[str]]:
    """The texts of a saved split, batch by batch, streamed from disk."""
    for batch in read_batches(split_dir, batch_rows, [TEXT_COLUMN]):
        yield batch.column(TEXT_COLUMN).to_pylist()


def train_bpe_tokenizer(texts: Iterable[list[str]], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts` (batches of strings), with RoBERTa-style specials usable for CLM and MLM."""
    bpe = ByteLevelBPETokenizer()
    specials = [SPECIAL_TOKENS[k] for k in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token")]
    bpe.train_from_iterator(
        texts,
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


def build_tokenizer(
    config: PipelineConfig, objective: Objective, train_texts: Iterable[list[str]]
) -> PreTrainedTokenizerBase:
    """The configured pretrained tokenizer, or a BPE trained on train_texts (batches of strings)."""
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


TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8"))})
_worker_encode: Callable[[list[str]], list[list[int]]] | None = None  # set in each pool process


def _start_worker(encode: Callable[[list[str]], list[list[int]]]) -> None:
    global _worker_encode
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker_encode = encode


def _encode_in_worker(batch: pa.Table) -> pa.Table:
    assert _worker_encode is not None
    return _encode_batch(batch, _worker_encode)


@contextmanager
def batch_mapper(encode: Callable[[list[str]], list[list[int]]], num_proc: int) -> Iterator[tuple[Any, Any]]:
    """(mapper, function) for map_dataset_dict: `num_proc` forked processes encoding batches in order, or
    this process alone when num_proc is 1."""
    if num_proc <= 1:
        yield map, partial(_encode_batch, encode=encode)
        return
    # fork, as datasets.map(num_proc) does: the tokenizer is inherited, never pickled per batch.
    with multiprocessing.get_context("fork").Pool(num_proc, _start_worker, (encode,)) as pool:
        yield (lambda function, tables: pool.imap(function, tables)), _encode_in_worker


def tokenize_saved(
    flat_dataset_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    num_proc: int,
    dataset_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, int]:
    """The stage's work once the tokenizer exists (what bench/tokenize_bench.py times): every split of the
    saved flat dataset streamed through the tokenizer into dataset_dir as int32 ids and an int8 mask;
    returns the tokens per split. Memory stays at a few batches, whatever the corpus size."""
    sample = next(text_batches(flat_dataset_dir / "train", batch_rows=64), [])
    encode = encoder_for(tokenizer, sample)
    with batch_mapper(encode, num_proc) as (mapper, function):
        map_dataset_dict(
            flat_dataset_dir,
            dataset_dir,
            function,
            TOKENIZED_FEATURES,
            1000,
            [TEXT_COLUMN],
            mapper,
            report=logged_progress(log, "tokenize"),
        )
    tokenized = load_from_disk(str(dataset_dir))  # memory-mapped: counting reads the list offsets only
    return {split: total_tokens(tokenized[split]) for split in tokenized}


def processes_for(flat_dataset_dir: Path, num_proc: int) -> int:
    """num_proc, but no more processes than 1000-row batches in the largest split: more only cost start-up."""
    rows = max(len(split) for split in load_from_disk(str(flat_dataset_dir)).values())
    return max(1, min(num_proc, -(-rows // 1000)))


def tokenize_dataset(
    flat_dir: Path,
    config: PipelineConfig,
    objective: Objective,
    out_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, int]:
    """Build (or load) the tokenizer, save it, and tokenize every split into out_dir; returns tokens per split."""
    tokenizer = build_tokenizer(config, objective, text_batches(flat_dir / "dataset" / "train"))
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    num_proc = processes_for(flat_dir / "dataset", config.data.num_proc or min(available_cores(), 4))
    tokens = tokenize_saved(flat_dir / "dataset", tokenizer, num_proc, out_dir / "dataset", log)
    source = tokenizer_source(config, objective) or f"BPE trained here (vocab {len(tokenizer)})"
    log.info(f"tokenize: {source}; tokens {tokens} with {num_proc} processes")
    return tokens


def row_token_counts(tokenized: Dataset) -> np.ndarray:
    """Tokens per row, read from the list offsets alone (the token ids stay on disk)."""
    return pc.list_value_length(tokenized.data.column("input_ids")).to_numpy().astype(np.int64)


def total_tokens(tokenized: Dataset) -> int:
    return int(row_token_counts(tokenized).sum())


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
