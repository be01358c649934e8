"""The flatten stage's work: nested columns become dotted columns and the text field is joined into one string
per row, in column TEXT_COLUMN, the one column tokenize reads and the only one stored. Rows without text are
dropped.

Streamed from the download artifact to this one, batch by batch (lmpipe.store.arrow_stream): no
`Dataset.map`, so no cache file in $TMPDIR or beside the input, and memory bounded by one batch. The
download artifact's checksums are verified on the way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lmpipe.data.columns import TEXT_COLUMN, TEXT_FEATURES
from lmpipe.data.text_field import join_text, texts_of
from lmpipe.errors import PipelineInputError
from lmpipe.store.arrow_stream import logged_progress, map_dataset_dict, split_files, split_rows
from lmpipe.store.manifest import DigestCheck

__all__ = ["flatten_dataset", "join_text", "text_table"]

_log = logging.getLogger(__name__)

BATCH_ROWS = 1000


def text_table(batch: pa.Table, text_field: str) -> pa.Table:
    """One batch of raw rows -> its non-empty texts, one string per row."""
    texts = pa.array(texts_of(batch, text_field), type=pa.string())
    non_empty = pc.invert(pc.equal(pc.utf8_trim_whitespace(texts), ""))
    return pa.table({TEXT_COLUMN: texts.filter(non_empty)})


def flatten_dataset(
    download_dir: Path, text_field: str, out_dir: Path, log: logging.Logger | logging.LoggerAdapter = _log
) -> dict[str, dict[str, int]]:
    """The stage: every split of the download artifact streamed into out_dir/dataset; returns the report
    (rows kept, empty rows dropped and bytes of text per split)."""
    source = download_dir / "dataset"

    def texts(batch: pa.Table) -> pa.Table:
        return text_table(batch, text_field)

    written = map_dataset_dict(
        source,
        out_dir / "dataset",
        texts,
        TEXT_FEATURES.arrow_schema,
        BATCH_ROWS,
        report=logged_progress(log, "flatten"),
        check=DigestCheck.of(download_dir),
    )
    report = {}
    for split, rows in written.items():
        if rows == 0:
            raise PipelineInputError(f"data.text_field={text_field!r}: every row of the {split} split has empty text")
        report[split] = {
            "rows": rows,
            "dropped_empty_rows": split_rows(source / split) - rows,
            "text_bytes": text_bytes(out_dir / "dataset" / split),
        }
    (out_dir / "flatten_report.json").write_text(json.dumps(report, indent=2))
    dropped = {split: report[split]["dropped_empty_rows"] for split in report}
    log.info(f"flatten: text from {text_field!r}; dropped empty rows {dropped}")
    return report


def text_bytes(split_dir: Path) -> int:
    """UTF-8 bytes of a saved text split, from its string offsets alone (memory-mapped: no text is read)."""
    total = 0
    for path in split_files(split_dir):
        with pa.memory_map(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                total += pc.sum(pc.binary_length(batch.column(TEXT_COLUMN))).as_py() or 0
    return total
