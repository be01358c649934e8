"""Stream a saved dataset split through a function, batch by batch, into a new saved split.

What `Dataset.map` + `save_to_disk` do, with memory bounded by one batch whatever the corpus size:
- input is read as an Arrow IPC stream from a plain file, not memory-mapped, so pages already
  processed never count in this process's RSS (a memory map keeps every page it touched);
- each file read to its end is hashed on the way and checked against its artifact's manifest
  (lmpipe.store.manifest.DigestCheck), so the full checksum costs no extra read;
- output is written once, straight into the artifact directory (map + save_to_disk writes it
  twice, and reading it back for the second write touches every page again), in shards of at most
  SHARD_BYTES, as save_to_disk shards.
The directories it reads and writes are in the `datasets` on-disk layout (`load_from_disk` reads
them), handled with pyarrow alone: the caller passes the Arrow schema, with the `datasets`
features in its metadata (`Features.arrow_schema`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from lmpipe.store.keys import file_digest, fingerprint
from lmpipe.store.manifest import DigestCheck

SHARD_BYTES = 500 * 2**20  # save_to_disk's default shard size: files a network file system copies in parallel


def split_files(split_dir: Path) -> list[Path]:
    """The Arrow files of a split saved by save_to_disk (or by this module), in order."""
    state = json.loads((split_dir / "state.json").read_text())
    return [split_dir / entry["filename"] for entry in state["_data_files"]]


def read_batches(
    split_dir: Path, rows: int, columns: list[str] | None = None, check: DigestCheck | None = None
) -> Iterator[pa.Table]:
    """Consecutive tables of exactly `rows` rows (the last may be shorter), as Dataset.map(batch_size=rows)
    would see them, read without a memory map. With `check`, every file read to its end is checksummed.
    Shards written with different schemas (a column all null at first) come out promoted to one."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for path in split_files(split_dir):
        for batch in _file_batches(path, check):
            if columns is not None:
                batch = batch.select(columns)
            if pending and not batch.schema.equals(pending[0].schema):
                pending, batch = _promoted(pending, batch)
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _file_batches(path: Path, check: DigestCheck | None) -> Iterator[pa.RecordBatch]:
    if check is None or not check.wants(path):
        with pa.OSFile(str(path)) as source:
            yield from pa.ipc.open_stream(source)
        return
    with blamed_on_damage(check, [path]), open(path, "rb") as raw:
        hashing = _HashingReader(raw)
        yield from pa.ipc.open_stream(pa.PythonFile(io.BufferedReader(hashing, 1 << 20), mode="r"))
        while hashing.read(1 << 20):  # whatever follows the stream's end marker counts too
            pass
    check.finished(path, hashing.digest.hexdigest())


@contextmanager
def blamed_on_damage(check: DigestCheck | None, files: Iterable[Path]) -> Iterator[None]:
    """A file that does not even parse (a flipped header, a mangled state.json) may be damage the lookup
    cannot see: hash `files` then, so it is reported, and withdrawn, as corrupt; else the error stands."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError, KeyError):
        for path in files if check is not None else ():
            if path.is_file() and check.wants(path):
                check.finished(path, file_digest(path))  # raises CorruptArtifactError on a mismatch
        raise


class _HashingReader(io.RawIOBase):
    """A file's bytes, hashed as they are read."""

    def __init__(self, raw: io.BufferedReader):
        self.raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = self.raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count


def _promoted(pending: list[pa.RecordBatch], batch: pa.RecordBatch) -> tuple[list[pa.RecordBatch], pa.RecordBatch]:
    schema = pa.unify_schemas([pending[0].schema, batch.schema], promote_options="permissive")
    return [conformed(b, schema) for b in pending], conformed(batch, schema)


def conformed(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """`data` with `schema`'s columns in its order, by name: a column it lacks is all null."""
    columns = [
        data.column(field.name) if field.name in data.column_names else pa.nulls(data.num_rows, field.type)
        for field in schema
    ]
    made = pa.Table if isinstance(data, pa.Table) else pa.RecordBatch
    return made.from_arrays(
        columns, schema=pa.schema([f.with_type(c.type) for f, c in zip(schema, columns, strict=True)])
    ).cast(schema)


class SplitWriter:
    """One saved split, written table by table: shards of at most `shard_bytes`, then dataset_info.json and
    state.json at `close`. schema=None takes the first table's and promotes it when a later table differs (a
    column all null so far, a new column); such a change also starts a new shard."""

    def __init__(self, split: str, split_dir: Path, schema: pa.Schema | None = None, shard_bytes: int = SHARD_BYTES):
        split_dir.mkdir(parents=True)
        self.split, self.split_dir, self.schema, self.shard_bytes = split, split_dir, schema, shard_bytes
        self.fixed = schema is not None  # a schema given is the schema written: never widened
        self.shards: list[Path] = []
        self.rows = 0
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        elif not table.schema.equals(self.schema):
            try:
                table = table.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):  # a new column, a wider type
                if self.fixed:
                    raise
                # The features `datasets` wrote for the first schema no longer hold: they are inferred again.
                self.schema = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
                self.schema = self.schema.remove_metadata()
                table = conformed(table, self.schema)
                self._close_shard()
        if self._writer is not None and self.shards[-1].stat().st_size >= self.shard_bytes:
            self._close_shard()
        if self._writer is None:
            self.shards.append(self.split_dir / f"shard-{len(self.shards):05d}.arrow")
            self._writer = pa.ipc.new_stream(str(self.shards[-1]), self.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> int:
        """Finish the split; returns its rows. A split without rows gets one empty file, as save_to_disk's."""
        if not self.shards:
            self.schema = self.schema if self.schema is not None else pa.schema([])
            self.shards.append(self.split_dir / "shard-00000.arrow")
            self._writer = pa.ipc.new_stream(str(self.shards[-1]), self.schema)
        self._close_shard()
        assert self.schema is not None
        names = [f"data-{i:05d}-of-{len(self.shards):05d}.arrow" for i in range(len(self.shards))]
        for shard, name in zip(self.shards, names, strict=True):
            shard.rename(self.split_dir / name)
        state = {
            "_data_files": [{"filename": name} for name in names],
            # What `datasets` names a dataset's state by; ours is derived from what defines the split.
            "_fingerprint": fingerprint({"split": self.split, "rows": self.rows, "schema": self.schema.to_string()}),
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": self.split,
        }
        (self.split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        info = dataset_info(self.schema)
        (self.split_dir / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        return self.rows

    def abandon(self) -> None:
        """Stop writing after an error; the caller's scratch directory goes with what was written."""
        self._close_shard()


def write_split(
    tables: Iterable[pa.Table], schema: pa.Schema | None, split: str, split_dir: Path, shard_bytes: int = SHARD_BYTES
) -> int:
    """Write `tables` as one saved split (see SplitWriter); returns its rows."""
    writer = SplitWriter(split, split_dir, schema, shard_bytes)
    try:
        for table in tables:
            writer.write(table)
    except BaseException:
        writer.abandon()
        raise
    return writer.close()


def dataset_info(schema: pa.Schema) -> dict:
    """dataset_info.json: the `datasets` features the schema's metadata carries (load_from_disk reads them;
    without any, it infers them from the Arrow types)."""
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
    check: DigestCheck | None = None,
) -> dict[str, int]:
    """Every split of the saved DatasetDict in_dir, `batch_rows` rows at a time through `function`, saved to
    out_dir; returns the rows written per split. `mapper` applies it (a process pool's imap, say), in order;
    `report` hears how far each split has got, every `report_every_s` seconds and at its end; `check`
    verifies the files read against their artifact's manifest."""
    splits = dataset_splits(in_dir)
    written = {}
    for split in splits:
        read_rows: deque[int] = deque()  # rows of each batch read, in order: outputs may have other counts
        with blamed_on_damage(check, sorted((in_dir / split).iterdir())):
            total = split_rows(in_dir / split)  # its headers and state.json, read before any data
        batches = read_batches(in_dir / split, batch_rows, columns, check)
        tables = mapper(function, _counted(batches, read_rows))
        if report is not None:
            tables = reporting(tables, read_rows, split, total, report, report_every_s)
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
