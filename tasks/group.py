"""group: concatenate token ids and cut them into block_size blocks.

Rows are grouped in batches of GROUP_BATCH_ROWS, the default batch of the guide's
`.map(group_texts, batched=True)`, so with remainder='drop' our blocks equal the guide's token
for token. The concatenation is one NumPy pass over Arrow buffers instead of the guide's
`sum(list_of_lists, [])`, which is quadratic in the batch's token count.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from datasets import DatasetDict, disable_caching, load_from_disk
from prefect import get_run_logger, task
from transformers import AutoTokenizer

from lmpipe.artifacts import artifact_dir, cached_stage, code_version, ensure_built
from lmpipe.config import Objective, PipelineConfig
from lmpipe.errors import PipelineInputError
from tasks.tokenize_texts import total_tokens

_log = logging.getLogger(__name__)

GROUP_BATCH_ROWS = 1000  # the guide's .map default; the remainder is dropped per batch, as there
IGNORE_INDEX = -100  # label value the loss skips (padding)
Remainder = Literal["drop", "pad"]


def group_into_blocks(
    input_ids: np.ndarray, attention_mask: np.ndarray, block_size: int, remainder: Remainder, pad_id: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut one flat token stream into (blocks, block_size) arrays; returns (ids, mask, dropped_tokens).

    input_ids, attention_mask: (tokens,) -> (blocks, block_size) each.
    """
    tokens = len(input_ids)
    full = tokens // block_size * block_size
    if remainder == "drop" or full == tokens:
        ids, mask = input_ids[:full], attention_mask[:full]
        dropped = tokens - full
    else:
        padding = full + block_size - tokens
        ids = np.concatenate([input_ids, np.full(padding, pad_id, dtype=input_ids.dtype)])
        mask = np.concatenate([attention_mask, np.zeros(padding, dtype=attention_mask.dtype)])
        dropped = 0
    return ids.reshape(-1, block_size), mask.reshape(-1, block_size), dropped


def labels_for(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CLM labels are the inputs (the model shifts them); padding is ignored by the loss."""
    return np.where(mask.astype(bool), ids, IGNORE_INDEX)


def _group_batch(
    batch: pa.Table, block_size: int, remainder: Remainder, pad_id: int, with_labels: bool
) -> dict[str, Any]:
    # list<int> columns -> their flat value buffers: no Python-level concatenation at all.
    ids = batch.column("input_ids").combine_chunks().flatten().to_numpy()
    mask = batch.column("attention_mask").combine_chunks().flatten().to_numpy()
    block_ids, block_mask, _ = group_into_blocks(ids, mask, block_size, remainder, pad_id)
    out = {"input_ids": block_ids, "attention_mask": block_mask}
    if with_labels:
        out["labels"] = labels_for(block_ids, block_mask)
    return out


def group_splits(
    tokenized: DatasetDict, block_size: int, remainder: Remainder, pad_id: int, with_labels: bool
) -> tuple[DatasetDict, dict[str, int]]:
    """Blocks for every split, and the number of tokens dropped per split."""
    disable_caching()  # map() would write cache files into the upstream artifact; ours is the cache
    grouped = (
        tokenized.with_format("arrow")
        .map(
            _group_batch,
            batched=True,
            batch_size=GROUP_BATCH_ROWS,
            fn_kwargs={"block_size": block_size, "remainder": remainder, "pad_id": pad_id, "with_labels": with_labels},
            remove_columns=tokenized["train"].column_names,
            desc=f"group into {block_size}-token blocks",
        )
        .with_format(None)
    )
    # Every kept token sits in a block; with 'pad' nothing is dropped, with 'drop' the rest is.
    dropped = {
        split: 0 if remainder == "pad" else total_tokens(tokenized[split]) - len(grouped[split]) * block_size
        for split in grouped
    }
    return grouped, dropped


def group_dataset(
    tokenize_dir: Path,
    block_size: int,
    remainder: Remainder,
    with_labels: bool,
    out_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> DatasetDict:
    tokenized = load_from_disk(str(tokenize_dir / "dataset"))
    pad_id = _pad_id(tokenize_dir) if remainder == "pad" else 0  # only padding needs the tokenizer
    grouped, dropped = group_splits(tokenized, block_size, remainder, pad_id, with_labels)
    for split in ("train", "test"):
        if len(grouped[split]) == 0:
            tokens = total_tokens(tokenized[split])
            raise PipelineInputError(
                f"data.block_size={block_size}: the {split} split has {tokens} tokens, too few for one block; "
                "lower data.block_size, set data.remainder=pad, or add data"
            )
    grouped.save_to_disk(str(out_dir / "dataset"))
    report = {split: {"blocks": len(grouped[split]), "dropped_tokens": dropped[split]} for split in grouped}
    (out_dir / "group_report.json").write_text(json.dumps(report, indent=2))
    log.info(f"group: block_size={block_size}, remainder={remainder}: {report}")
    return grouped


def _pad_id(tokenize_dir: Path) -> int:
    """The tokenizer's pad id; GPT-2 tokenizers have none, so fall back to eos as the guide does."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenize_dir / "tokenizer"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


# ---------------------------------------------------------------------------- task


def group_output_dir(tokenize_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = {
        "upstream": Path(tokenize_dir).name,
        "block_size": config.data.block_size,
        "remainder": config.data.remainder,
        "labels": objective == "clm",
        "code": code_version(__file__),
    }
    return artifact_dir(config.artifacts.root, "group", inputs)


@task(name="group", **cached_stage(group_output_dir))
def group(tokenize_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """Concatenate and cut into block_size blocks (CLM blocks carry labels); returns the artifact directory."""
    out = group_output_dir(tokenize_dir, config, objective)
    log = get_run_logger()
    data = config.data
    ensure_built(
        out,
        "group",
        {"upstream": tokenize_dir, "block_size": data.block_size, "remainder": data.remainder},
        lambda scratch: group_dataset(
            Path(tokenize_dir), data.block_size, data.remainder, objective == "clm", scratch, log
        ),
        log,
    )
    return str(out)
