"""Stream a saved dataset split through a function, batch by batch, into a new saved split.

What `Dataset.map` + `save_to_disk` do, with memory bounded by one batch whatever the corpus size:
- input is read as an Arrow IPC stream from a plain file, not memory-mapped, so pages already
  processed never count in this process's RSS (a memory map keeps every page it touched);
- output is written once, straight into the artifact directory (map + save_to_disk writes it
  twice, and reading it back for the second write touches every page again).
The directories it reads and writes are in the `datasets` on-disk layout (`load_from_disk` reads
them), handled with pyarrow alone: the caller passes the Arrow schema, with the `datasets`
features in its metadata (`Features.arrow_schema`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa

from lmpipe.store.keys import fingerprint

DATA_FILE = "data-00000-of-00001.arrow"


def split_files(split_dir: Path) -> list[Path]:
    """The Arrow files of a split saved by save_to_disk (or by this module), in order."""
    state = json.loads((split_dir / "state.json").read_text())
    return [split_dir / entry["filename"] for entry in state["_data_files"]]


def read_batches(split_dir: Path, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Consecutive tables of exactly `rows` rows (the last may be shorter), as Dataset.map(batch_size=rows)
    would see them, read without a memory map."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for path in split_files(split_dir):
        with pa.OSFile(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                if columns is not None:
                    batch = batch.select(columns)
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= rows:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, rows)
                    rest = table.slice(rows)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def write_split(tables: Iterable[pa.Table], schema: pa.Schema, split: str, split_dir: Path) -> int:
    """Write `tables` as one saved split (data file, dataset_info.json, state.json); returns its rows."""
    split_dir.mkdir(parents=True)
    rows = 0
    with pa.ipc.new_stream(str(split_dir / DATA_FILE), schema) as writer:
        for table in tables:
            writer.write_table(table if table.schema.equals(schema) else table.cast(schema))
            rows += table.num_rows
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        # What `datasets` names a dataset's state by; ours is derived from what defines the split.
        "_fingerprint": fingerprint({"split": split, "rows": rows, "schema": schema.to_string()}),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    (split_dir / "dataset_info.json").write_text(json.dumps(dataset_info(schema), indent=2, sort_keys=True))
    return rows


def dataset_info(schema: pa.Schema) -> dict:
    """dataset_info.json: the `datasets` features the schema's metadata carries (load_from_disk reads them)."""
    metadata = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
    return {"features": metadata.get("info", {}).get("features")}


def write_dataset_dict(dataset_dir: Path, splits: list[str]) -> None:
    """dataset_dict.json last: a directory without it is not a dataset load_from_disk would read."""
    (dataset_dir / "dataset_dict.json").write_text(json.dumps({"splits": splits}))


Mapper = Callable[[Callable[[pa.Table], pa.Table], Iterable[pa.Table]], Iterable[pa.Table]]
Progress = Callable[[str, int, int], None]  # (split, rows done, rows in the split)


def map_dataset_dict(
    in_dir: Path,
    out_dir: Path,
    function: Callable[[pa.Table], pa.Table],
    schema: pa.Schema,
    batch_rows: int,
    columns: list[str] | None = None,
    mapper: Mapper = map,
    report: Progress | None = None,
    report_every_s: float = 10.0,
) -> dict[str, int]:
    """Every split of the saved DatasetDict in_dir, `batch_rows` rows at a time through `function`, saved to
    out_dir; returns the rows written per split. `mapper` applies it (a process pool's imap, say), in order;
    `report` hears how far each split has got, every `report_every_s` seconds and at its end."""
    splits = dataset_splits(in_dir)
    written = {}
    for split in splits:
        read_rows: deque[int] = deque()  # rows of each batch read, in order: outputs may have other counts
        tables = mapper(function, _counted(read_batches(in_dir / split, batch_rows, columns), read_rows))
        if report is not None:
            tables = reporting(tables, read_rows, split, split_rows(in_dir / split), report, report_every_s)
        written[split] = write_split(tables, schema, split, out_dir / split)
    write_dataset_dict(out_dir, splits)
    return written


def _counted(batches: Iterable[pa.Table], read_rows: deque[int]) -> Iterator[pa.Table]:
    for batch in batches:
        read_rows.append(batch.num_rows)
        yield batch


def reporting(
    tables: Iterable[pa.Table], read_rows: deque[int], split: str, total: int, report: Progress, every_s: float
) -> Iterator[pa.Table]:
    """`tables`, unchanged, calling report(split, input rows done, total) at most every `every_s` seconds and at
    the end. Each output table is one input batch (mappers keep order), whose row count `read_rows` holds."""
    done, last = 0, time.monotonic()
    for table in tables:
        yield table
        done += read_rows.popleft()
        if time.monotonic() - last >= every_s:
            report(split, done, total)
            last = time.monotonic()
    report(split, done, total)


def logged_progress(log: logging.Logger | logging.LoggerAdapter, stage: str) -> Progress:
    """A Progress that logs `<stage>: <split> <done>/<total> rows (<percent>)`."""

    def report(split: str, done: int, total: int) -> None:
        log.info(f"{stage}: {split} {done:,}/{total:,} rows ({done / max(total, 1):.0%})")

    return report


def split_rows(split_dir: Path) -> int:
    """Rows of a saved split, from its record batches' headers (memory-mapped: no column data is read)."""
    rows = 0
    for path in split_files(split_dir):
        with pa.memory_map(str(path)) as source:
            rows += sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    return rows


def dataset_splits(dataset_dir: Path) -> list[str]:
    return json.loads((dataset_dir / "dataset_dict.json").read_text())["splits"]
