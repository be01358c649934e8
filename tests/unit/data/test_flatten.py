"""lmpipe.data.flatten (the flatten stage): nested columns become dotted columns, the text field becomes one
string, and that string is all it stores, streamed without a cache file anywhere."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from lmpipe.data.columns import TEXT_COLUMN
from lmpipe.data.flatten import flatten_dataset, join_text, text_table
from lmpipe.errors import PipelineInputError
from lmpipe.store.publish import building


def eli5_rows(answer_lists: list[list[str]]) -> list[dict]:
    return [
        {
            "q_id": f"q{i}",
            "title": f"Question {i}?",
            "answers": {
                "a_id": [f"a{i}.{j}" for j in range(len(texts))],
                "text": texts,
                "score": list(range(len(texts))),
            },
        }
        for i, texts in enumerate(answer_lists)
    ]


@pytest.fixture()
def nested_splits() -> DatasetDict:
    return DatasetDict(
        {
            "train": Dataset.from_list(eli5_rows([["First answer.", "Second answer."], ["Only one."], []])),
            "test": Dataset.from_list(eli5_rows([["A test answer.", "And another."]])),
        }
    )


# ---------------------------------------------------------------------------- join_text


def test_join_text_handles_none_strings_and_lists():
    assert join_text(None, "f") == ""
    assert join_text("already a string", "f") == "already a string"
    assert join_text(["one", "two", "three"], "f") == "one two three"
    assert join_text([], "f") == ""
    assert join_text(["one", None, "", "two"], "f") == "one two"  # missing items are skipped


@pytest.mark.parametrize("value", [5, 1.5, ["text", 3], {"text": "x"}, [["nested"]]])
def test_join_text_rejects_non_string_values_naming_the_field(value):
    with pytest.raises(PipelineInputError) as caught:
        join_text(value, "answers.score")
    assert "data.text_field='answers.score'" in str(caught.value)
    assert type(value).__name__ in str(caught.value)


# ---------------------------------------------------------------------------- text_table


def texts(splits: DatasetDict, field: str, split: str = "train") -> list[str]:
    return text_table(splits[split].data.table, field).column(TEXT_COLUMN).to_pylist()


def test_nested_text_is_joined_into_one_string_per_row(nested_splits):
    assert texts(nested_splits, "answers.text") == ["First answer. Second answer.", "Only one."]  # q2 had none
    assert texts(nested_splits, "answers.text", "test") == ["A test answer. And another."]


def test_only_the_text_column_is_stored(nested_splits):
    assert text_table(nested_splits["train"].data.table, "answers.text").column_names == [TEXT_COLUMN]


def test_a_flat_string_field_is_used_as_is(nested_splits):
    assert texts(nested_splits, "title") == ["Question 0?", "Question 1?", "Question 2?"]


def test_an_existing_text_column_is_the_text_and_blank_rows_are_dropped():
    splits = DatasetDict({"train": Dataset.from_dict({"text": ["  ", "kept line", None], "other": ["a", "b", "c"]})})
    assert texts(splits, "text") == ["kept line"]


def test_deeper_nesting_is_flattened_to_dotted_names():
    splits = DatasetDict({"train": Dataset.from_list([{"a": {"b": {"c": ["deep", "text"]}}}])})
    assert texts(splits, "a.b.c") == ["deep text"]


def test_missing_text_field_names_the_setting_and_lists_columns(nested_splits):
    with pytest.raises(PipelineInputError) as caught:
        texts(nested_splits, "answers.body")
    message = str(caught.value)
    assert "data.text_field='answers.body'" in message
    for column in ("q_id", "title", "answers.a_id", "answers.text", "answers.score"):
        assert column in message


def test_non_string_text_field_is_an_input_error(nested_splits):
    with pytest.raises(PipelineInputError, match="answers.score"):
        texts(nested_splits, "answers.score")


# ---------------------------------------------------------------------------- flatten_dataset


def published_download(splits: DatasetDict, tmp_path: Path) -> Path:
    with building(tmp_path / "download" / "key", "download", {}) as scratch:
        splits.save_to_disk(str(scratch / "dataset"))
    return tmp_path / "download" / "key"


def test_flatten_dataset_saves_the_texts_and_reports_them(nested_splits, tmp_path):
    report = flatten_dataset(published_download(nested_splits, tmp_path), "answers.text", tmp_path / "out")
    saved = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert saved["train"].column_names == [TEXT_COLUMN]
    assert list(saved["train"][TEXT_COLUMN]) == ["First answer. Second answer.", "Only one."]
    assert report["train"] == {
        "rows": 2,
        "dropped_empty_rows": 1,
        "text_bytes": len("First answer. Second answer.Only one."),
    }
    assert json.loads((tmp_path / "out" / "flatten_report.json").read_text()) == report


def test_flatten_leaves_nothing_in_tmpdir(nested_splits, tmp_path, monkeypatch):
    download = published_download(nested_splits, tmp_path)
    scratch_tmp = tmp_path / "tmpdir"
    scratch_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # let tempfile see the new TMPDIR
    flatten_dataset(download, "answers.text", tmp_path / "out")
    assert list(scratch_tmp.iterdir()) == []
    assert sorted(p.name for p in download.rglob("cache-*")) == [], "nothing written beside the input either"


def test_flatten_dataset_rejects_a_split_with_no_text(tmp_path):
    splits = DatasetDict(
        {
            "train": Dataset.from_list(eli5_rows([["Some text."]])),
            "test": Dataset.from_list(eli5_rows([[], [""]])),
        }
    )
    with pytest.raises(PipelineInputError) as caught:
        flatten_dataset(published_download(splits, tmp_path), "answers.text", tmp_path / "out")
    assert "test split" in str(caught.value) and "answers.text" in str(caught.value)
