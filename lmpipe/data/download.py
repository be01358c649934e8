"""The download stage's work: read the corpus (builtin, local files or the Hub) batch by batch and split it into
train/test as it goes, writing both splits shard by shard.

Which side a row falls on is a hash of its text (the joined text field) salted with data.seed: the
same whatever the order the rows come in, the number of files or shards, and whether they were
streamed. An exact duplicate of a text therefore always lands beside it, so no duplicate can leak
from train into test; how many duplicates there were is counted and reported. Nothing is shuffled:
the trainer shuffles blocks, and a corpus keeps its order as `run_clm.py` keeps it.

Memory: one batch of rows, plus 8 bytes per non-empty row for the duplicate count (twice that for a
moment at the end, when the hashes are joined and sorted): 0.8 GB per 100 million rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, IterableDataset, load_dataset
from datasets.exceptions import DatasetGenerationError

from lmpipe.config.schema import STREAMED_SPLIT, DataConfig
from lmpipe.data import builtin_corpus
from lmpipe.data.file_formats import DECOMPRESSION_ERRORS, builder_for, unreadable_files_error
from lmpipe.data.hub import require_hub
from lmpipe.data.hub_revision import hub_revision_for_download
from lmpipe.data.sources import describe_source, local_files
from lmpipe.data.text_field import texts_of
from lmpipe.errors import PipelineInputError
from lmpipe.store.arrow_stream import SplitWriter, write_dataset_dict

_log = logging.getLogger(__name__)

BATCH_ROWS = 10_000  # rows per batch read: per-batch costs (a cast, a write) stay small beside the rows
SPLITS = ("train", "test")


# ---------------------------------------------------------------------------- reading the source


def source_split(data: DataConfig) -> tuple[str, int, int | None]:
    """(split name, first row, end row or None) of data.split for a streamed source, which has no length
    to resolve percentages or negative rows against (the config refuses those when streaming)."""
    match = re.fullmatch(STREAMED_SPLIT, data.split)
    assert match is not None, "DataConfig validates a streamed split"
    name, start, stop = match.groups()
    return name, int(start or 0), int(stop) if stop else None


def streamed(data: DataConfig) -> IterableDataset:
    """The source as a stream, sliced without reading past the slice."""
    name, start, stop = source_split(data)
    if data.source == "local":
        files = local_files(data)
        stream = load_dataset(
            builder_for(files, data.format), data_files=[str(f) for f in files], split=name, streaming=True
        )
    else:
        stream = load_dataset(
            data.path, data.hub_config_name, split=name, revision=hub_revision_for_download(data), streaming=True
        )
    if start:
        stream = stream.skip(start)
    return stream.take(stop - start) if stop is not None else stream


def materialized(data: DataConfig, cache_dir: Path) -> Dataset:
    """The source as `datasets` loads it whole (an Arrow copy in cache_dir for local files)."""
    if data.source == "local":
        files = local_files(data)
        builder = builder_for(files, data.format)
        return load_dataset(builder, data_files=[str(f) for f in files], split=data.split, cache_dir=str(cache_dir))
    # The user's Hugging Face cache, not ours: with HF_HUB_OFFLINE=1 that is where a copy is found.
    return load_dataset(data.path, data.hub_config_name, split=data.split, revision=hub_revision_for_download(data))


def source_batches(data: DataConfig, cache_dir: Path) -> Iterator[pa.Table]:
    """The raw corpus, BATCH_ROWS rows at a time, as Arrow tables; read errors become one-line input errors."""
    if data.source == "builtin":
        documents = builtin_corpus.builtin_documents(data.builtin_documents, seed=data.seed)
        yield from Dataset.from_list(documents).with_format("arrow").iter(BATCH_ROWS)
        return
    if data.source == "hub":
        require_hub(
            f"dataset {data.path!r}",
            field="data.path",
            alternatives="Use data.source=local with data.path pointing at json/jsonl/csv/parquet/txt files, "
            "or data.source=builtin for the offline corpus",
        )
    try:  # a stream reports a bad file as it reaches it, so the whole iteration is inside
        source = streamed(data) if data.streaming else materialized(data, cache_dir)
        yield from source.with_format("arrow").iter(BATCH_ROWS)
    except (DatasetGenerationError, pa.ArrowInvalid, *DECOMPRESSION_ERRORS) as error:  # a bad line, a truncated archive
        if data.source != "local":
            raise
        files = local_files(data)
        raise unreadable_files_error(files, builder_for(files, data.format), error) from error
    except (ValueError, StopIteration) as error:  # no rows, a bad split slice, unreadable rows
        if data.source != "local" or isinstance(error, PipelineInputError):
            raise
        # `datasets` says a split has no rows in these two ways (StopIteration: an empty JSON file)
        if isinstance(error, StopIteration) or "corresponds to no data" in str(error):
            raise PipelineInputError(
                f"data.path: local dataset {data.path!r} split {data.split!r} has 0 rows"
            ) from None
        builder = builder_for(local_files(data), data.format)
        raise PipelineInputError(
            f"data.path: cannot read {data.path!r} as {builder}: {str(error).splitlines()[0]}"
        ) from error


# ---------------------------------------------------------------------------- the split


def text_hashes(texts: list[str], seed: int) -> np.ndarray:
    """(rows,) uint64: a hash of each text, salted with the seed; the same text always gets the same value."""
    key = (seed % 2**64).to_bytes(8, "little")  # any int seed; blake2b takes a key of up to 64 bytes
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest(), "little"
            )
            for t in texts
        ),
        dtype=np.uint64,
        count=len(texts),
    )


def in_test_split(hashes: np.ndarray, test_size: float) -> np.ndarray:
    """(rows,) bool: a row is held out when its hash falls in the lowest `test_size` of the hash range."""
    return hashes < np.uint64(min(int(test_size * 2**64), 2**64 - 1))


def duplicate_count(hash_chunks: list[np.ndarray]) -> int:
    """Rows whose text an earlier row already had (exact duplicates; 64-bit hashes, collisions ~ never).
    Empties hash_chunks: the hashes are held once, sorted in place."""
    hashes = np.concatenate(hash_chunks) if hash_chunks else np.zeros(0, dtype=np.uint64)
    hash_chunks.clear()
    hashes.sort()
    return int(np.count_nonzero(hashes[1:] == hashes[:-1]))


@dataclass
class DownloadReport:
    rows_read: int = 0  # rows taken from the source (a slice's rows, not the file's)
    text_bytes_read: int = 0
    train_rows: int = 0
    test_rows: int = 0
    duplicate_rows: int = 0  # non-empty texts seen before; each falls on its original's side
    empty_rows: int = 0  # no text at all; flatten drops them


def split_into(
    batches: Iterable[pa.Table],
    text_field: str,
    test_size: float,
    seed: int,
    dataset_dir: Path,
    log: logging.Logger | logging.LoggerAdapter = _log,
    report_every_s: float = 10.0,
) -> DownloadReport:
    """Write each batch's rows to the train or test split of the saved dataset at dataset_dir, by text hash."""
    writers = {split: SplitWriter(split, dataset_dir / split) for split in SPLITS}
    report, hash_chunks, last = DownloadReport(), [], time.monotonic()
    try:
        for batch in batches:
            texts = texts_of(batch, text_field)
            hashes = text_hashes(texts, seed)
            held_out = in_test_split(hashes, test_size)
            non_empty = np.fromiter((bool(t.strip()) for t in texts), dtype=bool, count=len(texts))
            hash_chunks.append(hashes[non_empty])
            report.rows_read += batch.num_rows
            report.text_bytes_read += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
            report.empty_rows += int((~non_empty).sum())
            for split, keep in (("train", ~held_out), ("test", held_out)):
                if keep.any():
                    writers[split].write(batch.filter(pa.array(keep)))
            if time.monotonic() - last >= report_every_s:
                log.info(f"download: {report.rows_read:,} rows ({report.text_bytes_read / 1e6:,.1f} MB of text) read")
                last = time.monotonic()
    except BaseException:
        for writer in writers.values():
            writer.abandon()
        raise
    report.train_rows, report.test_rows = (writers[split].close() for split in SPLITS)
    write_dataset_dict(dataset_dir, list(SPLITS))
    report.duplicate_rows = duplicate_count(hash_chunks)
    return report


def check_split(report: DownloadReport, test_size: float, origin: str) -> None:
    if report.rows_read == 0:
        raise PipelineInputError(f"data: {origin} has 0 rows")
    for split in SPLITS:
        if getattr(report, f"{split}_rows") == 0:
            raise PipelineInputError(
                f"data.test_size={test_size}: {origin} has only {report.rows_read} rows, and none fell in the "
                f"{split} split; add data or change data.test_size"
            )


def download_dataset(
    data: DataConfig, out_dir: Path, log: logging.Logger | logging.LoggerAdapter = _log
) -> dict[str, Any]:
    """Read the corpus, split it and save it under out_dir/dataset (Arrow shards); returns the report."""
    cache_dir = out_dir / ".hf-cache"
    origin = describe_source(data)
    try:
        report = split_into(
            source_batches(data, cache_dir), data.text_field, data.test_size, data.seed, out_dir / "dataset", log
        )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)  # the split copied what we keep
    check_split(report, data.test_size, origin)
    (out_dir / "download_report.json").write_text(json.dumps(asdict(report), indent=2))
    log.info(
        f"download: {origin}{' (streamed)' if data.streaming else ''} -> {report.train_rows:,} train / "
        f"{report.test_rows:,} test rows; {report.duplicate_rows:,} duplicate texts, each on its original's side"
    )
    return asdict(report)
