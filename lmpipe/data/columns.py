"""The columns each data artifact holds: what one stage writes and the next one reads.

    flatten  -> TEXT_COLUMN, one string per row
    tokenize -> TOKENIZED_FEATURES, one document's ids per row
    group    -> BLOCK_FEATURES, block_size ids per row, read by training and evaluation

Blocks carry no labels: each objective's collator makes them (lmpipe.models.batches), so the causal
and the masked model read one blocks artifact whenever they share a tokenizer.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value

TEXT_COLUMN = "text"

TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8"))})

# attention_mask is 0 only on the padding of a last block (data.remainder=pad); packed blocks are all ones.
BLOCK_FEATURES = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8"))})


def row_token_counts(tokenized: Dataset) -> np.ndarray:
    """Tokens per row, read from the list offsets alone (the token ids stay on disk)."""
    return pc.list_value_length(tokenized.data.column("input_ids")).to_numpy().astype(np.int64)


def total_tokens(tokenized: Dataset) -> int:
    return int(row_token_counts(tokenized).sum())
