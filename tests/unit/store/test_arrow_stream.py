"""lmpipe.store.arrow_stream: saved splits streamed batch by batch into new saved splits load_from_disk reads."""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk

from lmpipe.store.arrow_stream import (
    logged_progress,
    map_dataset_dict,
    read_batches,
    split_rows,
    write_dataset_dict,
    write_split,
)
from lmpipe.store.manifest import CorruptArtifactError, DigestCheck, is_complete
from lmpipe.store.publish import building

FEATURES = Features({"n": Value("int64"), "doubled": List(Value("int32"))})


def saved(tmp_path, rows: int, shards: int):
    data = DatasetDict(
        train=Dataset.from_dict({"n": list(range(rows)), "text": [f"row {i}" for i in range(rows)]}),
        test=Dataset.from_dict({"n": [7], "text": ["x"]}),
    )
    data.save_to_disk(str(tmp_path / "in"), num_shards={"train": shards, "test": 1})
    return tmp_path / "in"


def test_batches_have_exactly_the_asked_rows_across_shard_files(tmp_path):
    source = saved(tmp_path, 2_437, shards=3)
    assert len(list((source / "train").glob("*.arrow"))) == 3
    batches = list(read_batches(source / "train", 1000, ["n"]))
    assert [b.num_rows for b in batches] == [1000, 1000, 437]
    assert batches[0].column_names == ["n"]
    assert pa.concat_tables(batches).column("n").to_pylist() == list(range(2_437))
    assert split_rows(source / "train") == 2_437


def test_mapped_splits_load_back_with_their_features_and_order(tmp_path, caplog):
    source = saved(tmp_path, 2_437, shards=3)

    def double(batch: pa.Table) -> pa.Table:
        n = batch.column("n").to_numpy()
        offsets = np.arange(0, 2 * len(n) + 1, 2, dtype=np.int32)
        doubled = pa.ListArray.from_arrays(offsets, np.repeat(n * 2, 2).astype(np.int32))
        return pa.table({"n": batch.column("n"), "doubled": doubled})

    with caplog.at_level(logging.INFO):
        written = map_dataset_dict(
            source,
            tmp_path / "out",
            double,
            FEATURES.arrow_schema,
            1000,
            report=logged_progress(logging.getLogger("t"), "demo"),
        )
    assert written == {"train": 2_437, "test": 1}
    loaded = load_from_disk(str(tmp_path / "out"))
    assert loaded["train"].features == FEATURES
    assert loaded["train"]["n"][:] == list(range(2_437))
    assert loaded["train"][5]["doubled"] == [10, 10]
    assert loaded["test"][0] == {"n": 7, "doubled": [14, 14]}
    assert "demo: train 2,437/2,437 rows (100%)" in caplog.text
    assert "demo: test 1/1 rows (100%)" in caplog.text


def test_an_empty_split_is_written_with_its_schema(tmp_path):
    numbers = Features({"n": Value("int64")})
    DatasetDict(
        train=Dataset.from_dict({"n": [1, 2]}, features=numbers), test=Dataset.from_dict({"n": []}, features=numbers)
    ).save_to_disk(str(tmp_path / "in"))
    map_dataset_dict(
        tmp_path / "in",
        tmp_path / "out",
        lambda b: pa.table({"n": b.column("n"), "doubled": pa.array([[1]] * b.num_rows, pa.list_(pa.int32()))}),
        FEATURES.arrow_schema,
        10,
    )
    loaded = load_from_disk(str(tmp_path / "out"))
    assert len(loaded["test"]) == 0 and loaded["test"].features == FEATURES


def test_progress_counts_rows_read_even_when_a_batch_maps_to_fewer_rows(tmp_path):
    source = saved(tmp_path, 2_437, shards=2)
    seen: list[tuple[str, int, int]] = []
    map_dataset_dict(
        source,
        tmp_path / "out",
        lambda batch: batch.select(["n"]).slice(0, 1),  # one row out per batch in, as group makes blocks
        Features({"n": Value("int64")}).arrow_schema,
        1000,
        report=lambda split, done, total: seen.append((split, done, total)),
        report_every_s=0,
    )
    assert [s for s in seen if s[0] == "train"] == [
        ("train", 1000, 2437),
        ("train", 2000, 2437),
        ("train", 2437, 2437),
        ("train", 2437, 2437),
    ]


# ---------------------------------------------------------------------------- shards, promoted schemas, checksums


def test_a_split_is_written_in_shards_of_bounded_size_and_loads_back_whole(tmp_path):
    tables = (pa.table({"n": np.arange(i * 1000, (i + 1) * 1000, dtype=np.int64)}) for i in range(10))
    rows = write_split(tables, None, "train", tmp_path / "out" / "train", shard_bytes=20_000)
    write_dataset_dict(tmp_path / "out", ["train"])
    files = sorted((tmp_path / "out" / "train").glob("*.arrow"))
    assert rows == 10_000 and len(files) == 4  # 8 kB per table: a shard closes at the first table past 20 kB
    assert all(f.stat().st_size < 20_000 + 9_000 for f in files)
    assert load_from_disk(str(tmp_path / "out"))["train"]["n"] == list(range(10_000))


def test_a_column_null_at_first_is_promoted_and_read_back_as_one_schema(tmp_path):
    first = pa.table({"text": ["a", "b"], "note": pa.array([None, None], pa.null())})
    later = pa.table({"text": ["c"], "note": ["set now"]})
    write_split(iter([first, later]), None, "train", tmp_path / "train")
    (table,) = read_batches(tmp_path / "train", 10)
    assert table.column("note").to_pylist() == [None, None, "set now"]
    assert table.schema.field("note").type == pa.string()


def test_a_stage_reading_its_upstream_checks_every_byte_and_withdraws_a_corrupt_one(tmp_path):
    artifact = tmp_path / "flatten" / "key"
    with building(artifact, "flatten", {}) as scratch:
        write_split(iter([pa.table({"n": np.arange(5000, dtype=np.int64)})]), None, "train", scratch / "train")
    (data_file,) = (artifact / "train").glob("*.arrow")
    assert [b.num_rows for b in read_batches(artifact / "train", 1000, check=DigestCheck.of(artifact))] == [1000] * 5

    stat = data_file.stat()
    raw = bytearray(data_file.read_bytes())
    raw[-100] ^= 0xFF  # one flipped bit in the data, size and time kept: only reading every byte finds it
    data_file.write_bytes(bytes(raw))
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert is_complete(artifact), "the lookup reads no data, so it cannot see this"
    with pytest.raises(CorruptArtifactError, match=r"flatten/key is corrupt: train/data-00000-of-00001.arrow"):
        list(read_batches(artifact / "train", 1000, check=DigestCheck.of(artifact)))
    assert not is_complete(artifact), "withdrawn: the next build of its key replaces it"


def test_shards_with_a_new_or_reordered_column_read_back_as_one_schema(tmp_path):
    first = pa.table({"a": [1, 2]})
    later = pa.table({"b": ["x"], "a": [3]})  # a new column, and the old one after it
    write_split(iter([first, later]), None, "train", tmp_path / "train")
    (table,) = read_batches(tmp_path / "train", 10)
    assert table.column_names == ["a", "b"]
    assert table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": None}, {"a": 3, "b": "x"}]


def test_a_given_schema_is_never_widened(tmp_path):
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        write_split(iter([pa.table({"n": ["not a number"]})]), pa.schema([("n", pa.int64())]), "train", tmp_path / "t")


def test_damage_that_stops_the_stream_parsing_is_reported_as_corruption_and_withdrawn(tmp_path):
    artifact = tmp_path / "tokenize" / "key"
    with building(artifact, "tokenize", {}) as scratch:
        write_split(iter([pa.table({"n": np.arange(5000, dtype=np.int64)})]), None, "train", scratch / "train")
        write_dataset_dict(scratch, ["train"])
    (data_file,) = (artifact / "train").glob("*.arrow")
    stat = data_file.stat()
    data_file.write_bytes(b"\xff" * 16 + data_file.read_bytes()[16:])  # the stream's first header, gone
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CorruptArtifactError, match="tokenize/key is corrupt"):
        map_dataset_dict(artifact, tmp_path / "out", lambda t: t, None, 1000, check=DigestCheck.of(artifact))
    assert not is_complete(artifact)
