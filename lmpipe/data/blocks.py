"""The group stage's work: concatenate token ids and cut them into block_size blocks.

Rows are grouped in batches of GROUP_BATCH_ROWS, the default batch of the guide's
`.map(group_texts, batched=True)`, so with remainder='drop' our blocks equal the guide's token
for token. The concatenation is one NumPy pass over Arrow buffers instead of the guide's
`sum(list_of_lists, [])`, which is quadratic in the batch's token count, and the splits are
streamed from disk to disk (lmpipe.store.arrow_stream), so memory stays at one batch: ~150x the guide's
speed on 52 MB of ids (bench/group_bench.py), a 1 GB corpus in bench/memory_bench.py.

Blocks hold ids only (an attention mask too for data.remainder=pad), no labels: both objectives read
one blocks artifact, and each one's collator derives its labels (lmpipe.models.batches). Ids keep the
tokenized artifact's compact type (uint16 whenever the vocabulary fits: lmpipe.data.columns).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from datasets import load_from_disk
from transformers import AutoTokenizer

from lmpipe.data.columns import block_features, row_token_counts, stored_id_type
from lmpipe.errors import PipelineInputError
from lmpipe.store.arrow_stream import logged_progress, map_dataset_dict
from lmpipe.store.manifest import DigestCheck

_log = logging.getLogger(__name__)

GROUP_BATCH_ROWS = 1000  # the guide's .map default; the remainder is dropped per batch, as there
Remainder = Literal["drop", "pad"]


def group_into_blocks(
    input_ids: np.ndarray, block_size: int, remainder: Remainder, pad_id: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut one flat token stream into (blocks, block_size) arrays; returns (ids, mask, dropped_tokens).

    input_ids: (tokens,) -> ids and mask (blocks, block_size); the mask is 0 on padding only.
    """
    tokens = len(input_ids)
    full = tokens // block_size * block_size
    if remainder == "drop" or full == tokens:
        ids, mask = input_ids[:full], np.ones(full, dtype=np.int8)  # (full,): blocks_table drops it for drop
        dropped = tokens - full
    else:
        padding = full + block_size - tokens
        ids = np.concatenate([input_ids, np.full(padding, pad_id, dtype=input_ids.dtype)])
        mask = np.concatenate([np.ones(tokens, dtype=np.int8), np.zeros(padding, dtype=np.int8)])
        dropped = 0
    return ids.reshape(-1, block_size), mask.reshape(-1, block_size), dropped


def blocks_table(batch: pa.Table, block_size: int, remainder: Remainder, pad_id: int) -> pa.Table:
    """One batch of tokenized rows -> its blocks, as Arrow list columns built from NumPy (no Python lists).
    The attention mask is kept for remainder=pad only: without padding it would be all ones."""
    # list<int> columns -> their flat value buffer: no Python-level concatenation at all; the id type is kept.
    ids = batch.column("input_ids").combine_chunks().flatten().to_numpy()
    block_ids, block_mask, _ = group_into_blocks(ids, block_size, remainder, pad_id)
    if remainder == "drop":
        return pa.table({"input_ids": _list_column(block_ids)})
    return pa.table({"input_ids": _list_column(block_ids), "attention_mask": _list_column(block_mask)})


def _list_column(blocks: np.ndarray) -> pa.ListArray:
    """(rows, width) -> a list<...> column of `rows` lists of `width` values, sharing the array's buffer."""
    rows, width = blocks.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(blocks.reshape(-1)))


def planned_blocks(row_tokens: np.ndarray, block_size: int, remainder: Remainder) -> tuple[int, int]:
    """(blocks, dropped tokens) grouping will give, from the token count of each row: exact, since the
    remainder is handled per GROUP_BATCH_ROWS batch. Known before anything is written."""
    starts = np.arange(0, len(row_tokens), GROUP_BATCH_ROWS)
    batch_tokens = np.add.reduceat(row_tokens, starts) if len(row_tokens) else np.zeros(0, dtype=np.int64)
    if remainder == "pad":
        return int((-(-batch_tokens // block_size)).sum()), 0
    blocks = batch_tokens // block_size
    return int(blocks.sum()), int((batch_tokens - blocks * block_size).sum())


def plan_blocks(tokenized_dir: Path, block_size: int, remainder: Remainder) -> dict[str, dict[str, int]]:
    """Per split of a saved tokenized dataset: its tokens, and the blocks and dropped tokens grouping gives."""
    tokenized = load_from_disk(str(tokenized_dir))  # memory-mapped; only the offsets are read
    report = {}
    for split in tokenized:
        row_tokens = row_token_counts(tokenized[split])
        blocks, dropped = planned_blocks(row_tokens, block_size, remainder)
        report[split] = {"tokens": int(row_tokens.sum()), "blocks": blocks, "dropped_tokens": dropped}
    return report


def group_saved(
    tokenized_dir: Path,
    out_dir: Path,
    block_size: int,
    remainder: Remainder,
    pad_id: int,
    log: logging.Logger | logging.LoggerAdapter = _log,
    check: DigestCheck | None = None,
) -> dict[str, int]:
    """Stream every split of a saved tokenized dataset into blocks saved in out_dir; returns blocks per split.
    Memory stays at one batch, whatever the corpus size; `check` verifies the tokenized artifact on the way."""
    features = block_features(stored_id_type(tokenized_dir / "train"), padded=remainder == "pad")
    return map_dataset_dict(
        tokenized_dir,
        out_dir,
        partial(blocks_table, block_size=block_size, remainder=remainder, pad_id=pad_id),
        features.arrow_schema,
        GROUP_BATCH_ROWS,
        columns=["input_ids"],
        report=logged_progress(log, "group"),
        check=check,
    )


def group_dataset(
    tokenize_dir: Path,
    block_size: int,
    remainder: Remainder,
    out_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> dict[str, dict[str, int]]:
    """The stage: blocks of the tokenize artifact saved under out_dir/dataset, refused before anything is
    written when a split would get none; returns the report (blocks and dropped tokens per split)."""
    plan = plan_blocks(tokenize_dir / "dataset", block_size, remainder)
    for split in ("train", "test"):
        if plan[split]["blocks"] == 0:
            raise PipelineInputError(
                f"data.block_size={block_size}: the {split} split has {plan[split]['tokens']} tokens, too few for "
                "one block; lower data.block_size, set data.remainder=pad, or add data"
            )
    pad_id = _pad_id(tokenize_dir) if remainder == "pad" else 0  # only padding needs the tokenizer
    check = DigestCheck.of(tokenize_dir)
    written = group_saved(tokenize_dir / "dataset", out_dir / "dataset", block_size, remainder, pad_id, log, check)
    report = {
        split: {"blocks": plan[split]["blocks"], "dropped_tokens": plan[split]["dropped_tokens"]} for split in plan
    }
    if written != {split: report[split]["blocks"] for split in report}:  # the plan and the data must agree
        raise RuntimeError(f"group: planned {report}, wrote {written} blocks")
    (out_dir / "group_report.json").write_text(json.dumps(report, indent=2))
    log.info(f"group: block_size={block_size}, remainder={remainder}: {report}")
    return report


def _pad_id(tokenize_dir: Path) -> int:
    """The tokenizer's pad id; GPT-2 tokenizers have none, so fall back to eos as the guide does."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenize_dir / "tokenizer"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0
