"""lmpipe.store.arrow_stream: saved splits streamed batch by batch into new saved splits load_from_disk reads."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk

from lmpipe.store.arrow_stream import logged_progress, map_dataset_dict, read_batches, split_rows

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
