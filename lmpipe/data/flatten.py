"""The flatten stage's work: nested columns become dotted columns; the text field is joined into one string
per row, in column TEXT_COLUMN, which tokenize reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datasets import DatasetDict, disable_caching, load_from_disk

from lmpipe.data.columns import TEXT_COLUMN
from lmpipe.errors import PipelineInputError

_log = logging.getLogger(__name__)


def join_text(value: Any, field: str) -> str:
    """A string stays as is; a list of strings is joined with spaces (the guide's ' '.join)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) or item is None for item in value):
        return " ".join(item for item in value if item)
    raise PipelineInputError(
        f"data.text_field={field!r} holds {type(value).__name__} values; it must be a string or a list of strings"
    )


def _join_batch(batch: dict[str, list[Any]], field: str) -> dict[str, list[str]]:
    return {TEXT_COLUMN: [join_text(value, field) for value in batch[field]]}


def flatten_and_join(splits: DatasetDict, text_field: str) -> DatasetDict:
    """Dataset.flatten (nested -> dotted columns), then put the joined text field in column 'text'."""
    disable_caching()  # map() would write cache files into the upstream artifact; ours is the cache
    flat = splits.flatten()
    columns = flat["train"].column_names
    if text_field not in columns:
        raise PipelineInputError(
            f"data.text_field={text_field!r} is not a column after flatten; columns are: {', '.join(columns)}"
        )
    joined = flat.map(
        _join_batch,
        batched=True,
        fn_kwargs={"field": text_field},
        desc=f"join {text_field}",
        # 'text' may already exist (plain-text files); the joined version replaces it.
        remove_columns=[TEXT_COLUMN] if TEXT_COLUMN in columns else None,
    )
    return joined.filter(_has_text, batched=True, desc="drop empty texts")


def _has_text(batch: dict[str, list[Any]]) -> list[bool]:
    return [bool(text.strip()) for text in batch[TEXT_COLUMN]]


def flatten_dataset(
    download_dir: Path, text_field: str, out_dir: Path, log: logging.Logger | logging.LoggerAdapter = _log
) -> DatasetDict:
    splits = load_from_disk(str(download_dir / "dataset"))
    flat = flatten_and_join(splits, text_field)
    for split in ("train", "test"):
        if len(flat[split]) == 0:
            raise PipelineInputError(f"data.text_field={text_field!r}: every row of the {split} split has empty text")
    flat.save_to_disk(str(out_dir / "dataset"))
    dropped = {s: len(splits[s]) - len(flat[s]) for s in ("train", "test")}
    report = {s: {"rows": len(flat[s]), "dropped_empty_rows": dropped[s]} for s in ("train", "test")}
    (out_dir / "flatten_report.json").write_text(json.dumps(report, indent=2))
    log.info(f"flatten: columns {flat['train'].column_names}; dropped empty rows {dropped}")
    return flat
