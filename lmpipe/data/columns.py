"""The columns each data artifact holds: what one stage writes and the next one reads.

    flatten  -> TEXT_FEATURES, one string per row
    tokenize -> tokenized_features(...), one document's ids per row
    group    -> block_features(...), block_size ids per row, read by training and evaluation

Stored compact: ids are uint16 whenever the vocabulary fits (half of int32), and no column is
stored that nothing reads. Unpadded token rows attend to every token, so they carry no attention
mask; blocks carry one only when data.remainder=pad made a padded last block. Blocks carry no labels
either: each objective's collator makes them (lmpipe.models.batches), so the causal and the masked
model read one blocks artifact whenever they share a tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value

TEXT_COLUMN = "text"

TEXT_FEATURES = Features({TEXT_COLUMN: Value("string")})

IdType = str  # "uint16" or "int32", a `datasets` Value dtype


def id_type_for(vocabulary: int) -> IdType:
    """The narrowest id type every token id of a `vocabulary`-sized tokenizer fits in."""
    return "uint16" if vocabulary <= 2**16 else "int32"


def tokenized_features(id_type: IdType) -> Features:
    return Features({"input_ids": List(Value(id_type))})


def block_features(id_type: IdType, padded: bool) -> Features:
    """Blocks' columns. attention_mask (0 on padding) only for data.remainder=pad: packed blocks have no padding."""
    if padded:
        return Features({"input_ids": List(Value(id_type)), "attention_mask": List(Value("int8"))})
    return Features({"input_ids": List(Value(id_type))})


def stored_id_type(split_dir: Path) -> IdType:
    """The id type a saved split holds, read from its first file's schema."""
    from lmpipe.store.arrow_stream import split_files

    with pa.memory_map(str(split_files(split_dir)[0])) as source:
        return str(pa.ipc.open_stream(source).schema.field("input_ids").type.value_type)


def row_token_counts(tokenized: Dataset) -> np.ndarray:
    """Tokens per row, read from the list offsets alone (the token ids stay on disk)."""
    return pc.list_value_length(tokenized.data.column("input_ids")).to_numpy().astype(np.int64)


def total_tokens(tokenized: Dataset) -> int:
    return int(row_token_counts(tokenized).sum())
