"""The tokenize stage's work: text into token ids with a fast tokenizer, streamed from disk to disk.

The artifact is keyed by the tokenizer, not the objective, so CLM and MLM share one tokenized
dataset whenever they use the same tokenizer (lmpipe.data.tokenizer_choice says which one that is).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from datasets import load_from_disk
from transformers import PreTrainedTokenizerBase

from lmpipe.compute.cpu import available_cores
from lmpipe.config.schema import PipelineConfig
from lmpipe.data.columns import TEXT_COLUMN, IdType, id_type_for, tokenized_features, total_tokens
from lmpipe.data.tokenizer_choice import tokenizer_source
from lmpipe.data.tokenizers import build_tokenizer
from lmpipe.store.arrow_stream import logged_progress, map_dataset_dict, read_batches
from lmpipe.store.manifest import DigestCheck

if TYPE_CHECKING:  # a type only: which objective is in the key, not the table's code
    from lmpipe.objectives import Objective

_log = logging.getLogger(__name__)


def text_batches(split_dir: Path, batch_rows: int = 1000) -> Iterator[list[str]]:
    """The texts of a saved split, batch by batch, streamed from disk."""
    for batch in read_batches(split_dir, batch_rows, [TEXT_COLUMN]):
        yield batch.column(TEXT_COLUMN).to_pylist()


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


def _encode_batch(batch: pa.Table, encode: Callable[[list[str]], list[list[int]]], id_type: pa.DataType) -> pa.Table:
    # pyarrow checks every id fits id_type: an id past it fails here, never wraps around.
    return pa.table({"input_ids": pa.array(encode(batch.column(TEXT_COLUMN).to_pylist()), type=pa.list_(id_type))})


_worker_encode: Callable[[list[str]], list[list[int]]] | None = None  # set in each pool process
_worker_id_type: pa.DataType = pa.int32()


def _start_worker(encode: Callable[[list[str]], list[list[int]]], id_type: pa.DataType) -> None:
    global _worker_encode, _worker_id_type
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    # A forked worker inherits the flow run's SIGTERM handler (Prefect's, which raises in the main thread
    # only). The pool ends its workers with SIGTERM; delivered to another thread, that handler left a
    # worker blocked on the pool's queue forever. The default action ends the process, whichever thread.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_encode, _worker_id_type = encode, id_type


def _encode_in_worker(batch: pa.Table) -> pa.Table:
    assert _worker_encode is not None
    return _encode_batch(batch, _worker_encode, _worker_id_type)


@contextmanager
def batch_mapper(
    encode: Callable[[list[str]], list[list[int]]], num_proc: int, id_type: pa.DataType
) -> Iterator[tuple[Any, Any]]:
    """(mapper, function) for map_dataset_dict: `num_proc` forked processes encoding batches in order, or
    this process alone when num_proc is 1."""
    if num_proc <= 1:
        yield map, partial(_encode_batch, encode=encode, id_type=id_type)
        return
    # fork, as datasets.map(num_proc) does: the tokenizer is inherited, never pickled per batch.
    with multiprocessing.get_context("fork").Pool(num_proc, _start_worker, (encode, id_type)) as pool:
        yield (lambda function, tables: pool.imap(function, tables)), _encode_in_worker


def tokenize_saved(
    flat_dataset_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    num_proc: int,
    dataset_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
    check: DigestCheck | None = None,
    id_type: IdType | None = None,
) -> dict[str, int]:
    """The stage's work once the tokenizer exists (what bench/tokenize_bench.py times): every split of the
    saved flat dataset streamed through the tokenizer into dataset_dir as ids of `id_type` (by default the
    narrowest the vocabulary fits: lmpipe.data.columns); returns the tokens per split. Memory stays at a few
    batches, whatever the corpus size; `check` verifies the flat artifact on the way."""
    sample = next(text_batches(flat_dataset_dir / "train", batch_rows=64), [])
    encode = encoder_for(tokenizer, sample)
    features = tokenized_features(id_type or id_type_for(len(tokenizer)))
    with batch_mapper(encode, num_proc, features.arrow_schema.field("input_ids").type.value_type) as (mapper, function):
        map_dataset_dict(
            flat_dataset_dir,
            dataset_dir,
            function,
            features.arrow_schema,
            1000,
            [TEXT_COLUMN],
            mapper,
            report=logged_progress(log, "tokenize"),
            check=check,
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
    train_texts = text_batches(flat_dir / "dataset" / "train")
    tokenizer = build_tokenizer(config, objective, train_texts, flat_dir / "flatten_report.json", out_dir, log)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))
    num_proc = processes_for(flat_dir / "dataset", config.data.num_proc or min(available_cores(), 4))
    tokens = tokenize_saved(
        flat_dir / "dataset", tokenizer, num_proc, out_dir / "dataset", log, DigestCheck.of(flat_dir)
    )
    source = tokenizer_source(config, objective) or f"BPE trained here (vocab {len(tokenizer)})"
    log.info(f"tokenize: {source}; tokens {tokens} with {num_proc} processes")
    return tokens
