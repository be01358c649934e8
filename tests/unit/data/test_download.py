"""lmpipe.data.download and sources (the download stage): local sources, format detection, the train/test
split and the cache identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from lmpipe.config.schema import DataConfig
from lmpipe.data.download import download_dataset, load_source, split_train_test
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


@pytest.mark.parametrize("rows", [0, 1])
def test_split_rejects_datasets_too_small_to_split(rows):
    dataset = Dataset.from_dict({"x": list(range(rows))})
    with pytest.raises(PipelineInputError) as caught:
        split_train_test(dataset, test_size=0.2, seed=0, origin="the test corpus")
    message = str(caught.value)
    assert "the test corpus" in message
    assert f"{rows} rows" in message


def test_split_is_reproducible_for_a_seed_and_partitions_the_rows():
    dataset = Dataset.from_list(ROWS)
    first = split_train_test(dataset, test_size=0.2, seed=42, origin="rows")
    again = split_train_test(dataset, test_size=0.2, seed=42, origin="rows")
    assert (len(first["train"]), len(first["test"])) == (8, 2)
    assert list(first["test"]["q_id"]) == list(again["test"]["q_id"])
    assert sorted([*first["train"]["q_id"], *first["test"]["q_id"]]) == sorted(row["q_id"] for row in ROWS)


def test_split_reports_an_empty_train_split_as_input_error():
    dataset = Dataset.from_dict({"x": [1, 2, 3]})
    with pytest.raises(PipelineInputError, match="data.test_size"):
        split_train_test(dataset, test_size=0.75, seed=0, origin="rows")


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


def test_load_local_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    dataset = load_source(local(path), tmp_path / "cache")
    assert dataset.column_names == ["q_id", "title", "score"]
    assert dataset.to_list() == ROWS


def test_load_local_json_array(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS))
    assert load_source(local(path), tmp_path / "cache").to_list() == ROWS


def test_load_local_csv(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("title,score\nfirst,1\nsecond,2\n")
    dataset = load_source(local(path), tmp_path / "cache")
    assert dataset.to_list() == [{"title": "first", "score": 1}, {"title": "second", "score": 2}]


def test_load_local_txt_gives_one_row_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("The first line.\nThe second line.\n")
    dataset = load_source(local(path), tmp_path / "cache")
    assert dataset.column_names == ["text"]
    assert list(dataset["text"]) == ["The first line.", "The second line."]


def test_load_local_with_declared_format_and_split_slice(tmp_path):
    path = write_jsonl(tmp_path / "rows.data", ROWS)
    dataset = load_source(local(path, format="jsonl", split="train[:3]"), tmp_path / "cache")
    assert list(dataset["q_id"]) == ["q0", "q1", "q2"]


def test_unknown_split_is_an_input_error(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    with pytest.raises(PipelineInputError, match="cannot read"):
        load_source(local(path, split="validation"), tmp_path / "cache")


def test_hub_source_fails_fast_naming_the_offline_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError) as caught:
        load_source(DataConfig(source="hub", path="eli5_category"), tmp_path / "cache")
    message = str(caught.value)
    assert "data.path" in message and "local" in message and "builtin" in message


def test_download_dataset_saves_a_train_test_split(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    out = tmp_path / "out"
    splits = download_dataset(local(path, test_size=0.3, seed=1), out)
    saved = load_from_disk(str(out / "dataset"))
    assert (len(saved["train"]), len(saved["test"])) == (7, 3)
    assert list(saved["test"]["q_id"]) == list(splits["test"]["q_id"])
    assert not (out / ".hf-cache").exists()  # the loader's cache is not kept in the artifact


def test_describe_source():
    assert "builtin" in describe_source(DataConfig())
    assert "'data/x.jsonl'" in describe_source(local("data/x.jsonl"))


# ---------------------------------------------------------------------------- cache identity


def test_local_identity_changes_with_file_contents_at_the_same_path(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    before = source_identity(local(path))
    assert source_identity(local(path)) == before
    write_jsonl(path, ROWS[:-1])
    assert source_identity(local(path)) != before


def test_local_identity_changes_when_a_glob_matches_another_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    before = source_identity(local(tmp_path / "*.jsonl"))
    write_jsonl(tmp_path / "b.jsonl", ROWS)
    assert source_identity(local(tmp_path / "*.jsonl")) != before


def test_local_identity_includes_format_and_split(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    base = source_identity(local(path))
    assert source_identity(local(path, split="train[:5]")) != base
    assert source_identity(local(path, format="json")) != base


def test_builtin_identity_tracks_document_count():
    assert source_identity(DataConfig(builtin_documents=10)) != source_identity(DataConfig(builtin_documents=20))


def test_hub_identity_is_the_dataset_reference():
    data = DataConfig(source="hub", path="eli5_category", split="train[:5000]", revision="abc")
    assert source_identity(data) == {
        "dataset": "eli5_category",
        "config_name": None,
        "split": "train[:5000]",
        "revision": "abc",
    }
