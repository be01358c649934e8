"""lmpipe.data.download and sources (the download stage): local sources, format detection, the train/test
split and the cache identity."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from datasets import load_from_disk
from pydantic import ValidationError

from lmpipe.config.schema import DataConfig
from lmpipe.data.download import download_dataset, source_batches
from lmpipe.data.file_formats import builder_for
from lmpipe.data.sources import describe_source, local_files, source_identity
from lmpipe.errors import HubUnreachableError, PipelineInputError

ROWS = [{"q_id": f"q{i}", "title": f"Question {i}?", "score": i} for i in range(10)]


def local(path: Path | str, **fields) -> DataConfig:
    return DataConfig(source="local", path=str(path), **fields)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------------------- train/test split


def split_rows_of(data: DataConfig, tmp_path: Path) -> dict[str, list[dict]]:
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    download_dataset(data, out)
    saved = load_from_disk(str(out / "dataset"))
    return {split: saved[split].to_list() for split in ("train", "test")}


TEXT_ROWS = [{"q_id": f"q{i}", "answers": {"text": [f"answer number {i}", "and more"]}} for i in range(400)]


@pytest.mark.parametrize("rows", [0, 1])
def test_split_rejects_datasets_too_small_to_split(tmp_path, rows):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS[:rows])
    with pytest.raises(PipelineInputError) as caught:
        download_dataset(local(path), tmp_path / "out")
    message = str(caught.value)
    assert "data" in message and ("0 rows" in message or "1 rows" in message)
    assert not (tmp_path / "out" / ".hf-cache").exists()


def test_a_row_is_held_out_by_a_hash_of_its_text_whatever_the_order_and_the_files(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS)
    first = split_rows_of(local(path, test_size=0.25), tmp_path)
    assert 60 <= len(first["test"]) <= 140, "about a quarter is held out"
    assert sorted(r["q_id"] for r in first["train"] + first["test"]) == sorted(r["q_id"] for r in TEXT_ROWS)

    (tmp_path / "shards").mkdir()
    for n, start in enumerate(range(0, 400, 70)):  # other files, and each one reversed
        write_jsonl(tmp_path / "shards" / f"part-{n}.jsonl", TEXT_ROWS[start : start + 70][::-1])
    again = split_rows_of(local(tmp_path / "shards" / "*.jsonl", test_size=0.25), tmp_path)
    assert {r["q_id"] for r in again["test"]} == {r["q_id"] for r in first["test"]}

    other_seed = split_rows_of(local(path, test_size=0.25, seed=7), tmp_path)
    assert {r["q_id"] for r in other_seed["test"]} != {r["q_id"] for r in first["test"]}


def test_duplicated_texts_never_straddle_the_split_and_are_counted(tmp_path):
    rows = [{"id": i, "text": f"text {i % 50}"} for i in range(300)]  # each of 50 texts 6 times, other ids
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    report = download_dataset(local(path, text_field="text", test_size=0.3), out)
    saved = load_from_disk(str(out / "dataset"))
    train_texts, test_texts = set(saved["train"]["text"]), set(saved["test"]["text"])
    assert train_texts and test_texts and not train_texts & test_texts
    assert report["duplicate_rows"] == 250
    assert json.loads((out / "download_report.json").read_text())["duplicate_rows"] == 250


def test_a_text_field_that_does_not_exist_names_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS)
    with pytest.raises(PipelineInputError, match=r"data.text_field='answers.body'.*answers.text"):
        download_dataset(local(path, text_field="answers.body"), tmp_path / "out")


# ---------------------------------------------------------------------------- local files


def test_missing_local_file_names_data_path(tmp_path):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(PipelineInputError) as caught:
        local_files(local(missing))
    assert "data.path" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_local_glob_matches_files_sorted_and_skips_directories(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.csv"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "dir.jsonl").mkdir()
    assert local_files(local(tmp_path / "*.jsonl")) == [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]


@pytest.mark.parametrize(
    "suffix, builder",
    [
        (".json", "json"),
        (".jsonl", "json"),
        (".JSONL", "json"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".txt", "text"),
    ],
)
def test_format_is_picked_from_the_suffix(suffix, builder):
    assert builder_for([Path(f"data{suffix}")], "auto") == builder


@pytest.mark.parametrize("declared, builder", [("jsonl", "json"), ("txt", "text"), ("csv", "csv"), ("json", "json")])
def test_declared_format_wins_over_the_suffix(declared, builder):
    assert builder_for([Path("data.dat")], declared) == builder


@pytest.mark.parametrize("names", [["data.xlsx"], ["data"], ["a.jsonl", "b.csv"]])
def test_unknown_or_mixed_suffixes_ask_for_data_format(names):
    with pytest.raises(PipelineInputError) as caught:
        builder_for([Path(name) for name in names], "auto")
    message = str(caught.value)
    assert "data.format" in message
    assert "jsonl" in message  # it lists the formats to choose from


def rows_of(data: DataConfig, cache: Path) -> list[dict]:
    return [row for table in source_batches(data, cache) for row in table.to_pylist()]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_local_jsonl(tmp_path, streaming):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert rows_of(local(path, streaming=streaming), tmp_path / "cache") == ROWS


@pytest.mark.parametrize("streaming", [False, True])
def test_load_local_json_array(tmp_path, streaming):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS))
    assert rows_of(local(path, streaming=streaming), tmp_path / "cache") == ROWS


@pytest.mark.parametrize("streaming", [False, True])
def test_load_local_csv(tmp_path, streaming):
    path = tmp_path / "rows.csv"
    path.write_text("title,score\nfirst,1\nsecond,2\n")
    rows = rows_of(local(path, streaming=streaming), tmp_path / "cache")
    assert rows == [{"title": "first", "score": 1}, {"title": "second", "score": 2}]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_local_txt_gives_one_row_per_line(tmp_path, streaming):
    path = tmp_path / "corpus.txt"
    path.write_text("The first line.\nThe second line.\n")
    rows = rows_of(local(path, streaming=streaming), tmp_path / "cache")
    assert rows == [{"text": "The first line."}, {"text": "The second line."}]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_local_with_declared_format_and_split_slice(tmp_path, streaming):
    path = write_jsonl(tmp_path / "rows.data", ROWS)
    rows = rows_of(local(path, format="jsonl", split="train[:3]", streaming=streaming), tmp_path / "cache")
    assert [row["q_id"] for row in rows] == ["q0", "q1", "q2"]
    rows = rows_of(local(path, format="jsonl", split="train[4:6]", streaming=streaming), tmp_path / "cache")
    assert [row["q_id"] for row in rows] == ["q4", "q5"]


def test_a_streamed_slice_reads_only_the_rows_it_keeps(tmp_path):
    # 24 MB of rows, then a line no parser takes: past the slice and past the reader's first 10 MB chunk.
    rows = [{"text": f"row {i} " + "w" * 100} for i in range(200_000)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with path.open("a") as handle:
        handle.write("{not json\n")
    report = download_dataset(local(path, text_field="text", split="train[:5000]", streaming=True), tmp_path / "out")
    assert report["rows_read"] == 5000
    assert report["train_rows"] + report["test_rows"] == 5000
    with pytest.raises(PipelineInputError, match="line"):  # the whole file does not read: the slice stopped early
        download_dataset(local(path, text_field="text", streaming=True), tmp_path / "whole")


@pytest.mark.parametrize("split", ["train[:10%]", "train[-5:]", "train[::2]"])
def test_a_streamed_slice_needs_row_counts_from_the_start(split):
    with pytest.raises(ValidationError, match=r"data.split=.*data.streaming=false"):
        DataConfig(source="local", path="x.jsonl", split=split, streaming=True)
    assert DataConfig(source="local", path="x.jsonl", split=split).split == split  # fine when not streaming


@pytest.mark.parametrize("streaming", [False, True])
def test_unknown_split_is_an_input_error(tmp_path, streaming):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    with pytest.raises(PipelineInputError, match="cannot read|split"):
        rows_of(local(path, split="validation", streaming=streaming), tmp_path / "cache")


def test_hub_source_fails_fast_naming_the_offline_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError) as caught:
        rows_of(DataConfig(source="hub", path="eli5_category"), tmp_path / "cache")
    message = str(caught.value)
    assert "data.path" in message and "local" in message and "builtin" in message


def test_download_dataset_saves_a_train_test_split(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS)
    out = tmp_path / "out"
    report = download_dataset(local(path, test_size=0.3, seed=1), out)
    saved = load_from_disk(str(out / "dataset"))
    assert (len(saved["train"]), len(saved["test"])) == (report["train_rows"], report["test_rows"])
    assert report["train_rows"] + report["test_rows"] == report["rows_read"] == 400
    assert not (out / ".hf-cache").exists()  # the loader's cache is not kept in the artifact


def test_describe_source():
    assert "builtin" in describe_source(DataConfig())
    assert "'data/x.jsonl'" in describe_source(local("data/x.jsonl"))


# ---------------------------------------------------------------------------- cache identity


def test_local_identity_changes_with_file_contents_at_the_same_path(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    before = source_identity(local(path), tmp_path)
    assert source_identity(local(path), tmp_path) == before
    write_jsonl(path, ROWS[:-1])
    assert source_identity(local(path), tmp_path) != before


def test_local_identity_changes_when_a_glob_matches_another_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    before = source_identity(local(tmp_path / "*.jsonl"), tmp_path)
    write_jsonl(tmp_path / "b.jsonl", ROWS)
    assert source_identity(local(tmp_path / "*.jsonl"), tmp_path) != before


def test_local_identity_includes_format_and_split(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    base = source_identity(local(path), tmp_path)
    assert source_identity(local(path, split="train[:5]"), tmp_path) != base
    assert source_identity(local(path, format="json"), tmp_path) != base


def test_builtin_identity_tracks_document_count(tmp_path):
    assert source_identity(DataConfig(builtin_documents=10), tmp_path) != source_identity(
        DataConfig(builtin_documents=20), tmp_path
    )


def test_hub_identity_is_the_dataset_reference(tmp_path):
    pinned = "a" * 40  # a commit sha: used as given, no Hub call (tests/unit/data/test_sources.py has the rest)
    data = DataConfig(source="hub", path="eli5_category", split="train[:5000]", revision=pinned)
    assert source_identity(data, tmp_path) == {
        "dataset": "eli5_category",
        "config_name": None,
        "split": "train[:5000]",
        "revision": pinned,
    }


def test_a_local_file_is_hashed_once_per_version_not_on_every_lookup(tmp_path, monkeypatch):
    from lmpipe.store import digest_memo

    def settled(path: Path) -> Path:  # written a minute ago: past the racy window
        os.utime(path, (time.time() - 60, time.time() - 60))
        return path

    path = settled(write_jsonl(tmp_path / "rows.jsonl", ROWS))
    hashed: list[Path] = []
    real = digest_memo.file_digest
    monkeypatch.setattr(digest_memo, "file_digest", lambda p: hashed.append(p) or real(p))
    first = source_identity(local(path), tmp_path / "root")
    assert source_identity(local(path), tmp_path / "root") == first and len(hashed) == 1
    settled(write_jsonl(path, ROWS[:-1]))  # a new version: hashed again, and the identity follows it
    assert source_identity(local(path), tmp_path / "root") != first and len(hashed) == 2

    write_jsonl(path, ROWS)  # just written: an edit within the same clock tick would keep its time, so
    source_identity(local(path), tmp_path / "root")  # its digest is not remembered (git's racy-clean rule)
    source_identity(local(path), tmp_path / "root")
    assert len(hashed) == 4


def test_a_local_file_read_with_and_without_streaming_gives_the_same_train_and_test_rows(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS + TEXT_ROWS[:40])  # duplicates too
    materialized = split_rows_of(local(path, test_size=0.3), tmp_path)
    streamed = split_rows_of(local(path, test_size=0.3, streaming=True), tmp_path)
    assert streamed == materialized  # the same rows, on the same sides, in the same order
    assert len(materialized["test"]) > 0 and len(materialized["train"]) > 0


def test_a_streamed_slice_that_ends_before_it_starts_is_refused_at_config_time():
    with pytest.raises(ValidationError, match="starts after it ends"):
        DataConfig(source="local", path="x.jsonl", split="train[5:3]", streaming=True)


def test_any_integer_seed_salts_the_split(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", TEXT_ROWS[:50])
    for seed in (-1, 2**70):
        report = download_dataset(local(path, seed=seed, test_size=0.3), tmp_path / f"out-{seed}")
        assert report["train_rows"] + report["test_rows"] == 50
