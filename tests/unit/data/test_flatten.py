"""lmpipe.data.flatten (the flatten stage): nested columns become dotted columns, and the text field becomes
one string."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from lmpipe.data.columns import TEXT_COLUMN
from lmpipe.data.flatten import flatten_and_join, flatten_dataset, join_text
from lmpipe.errors import PipelineInputError


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


# ---------------------------------------------------------------------------- flatten_and_join


def test_nested_columns_become_dotted_and_text_is_joined(nested_splits):
    flat = flatten_and_join(nested_splits, "answers.text")
    assert set(flat) == {"train", "test"}
    assert set(flat["train"].column_names) == {
        "q_id",
        "title",
        "answers.a_id",
        "answers.text",
        "answers.score",
        TEXT_COLUMN,
    }
    assert list(flat["train"][TEXT_COLUMN]) == ["First answer. Second answer.", "Only one."]
    assert list(flat["test"][TEXT_COLUMN]) == ["A test answer. And another."]
    assert list(flat["train"]["answers.text"]) == [["First answer.", "Second answer."], ["Only one."]]


def test_rows_with_empty_text_are_dropped(nested_splits):
    flat = flatten_and_join(nested_splits, "answers.text")
    assert list(flat["train"]["q_id"]) == ["q0", "q1"]  # q2 had no answers


def test_a_flat_string_field_is_used_as_is(nested_splits):
    flat = flatten_and_join(nested_splits, "title")
    assert list(flat["train"][TEXT_COLUMN]) == ["Question 0?", "Question 1?", "Question 2?"]


def test_an_existing_text_column_is_replaced_by_the_joined_field():
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["  ", "kept line"], "other": ["a", "b"]}),
            "test": Dataset.from_dict({"text": ["test line"], "other": ["c"]}),
        }
    )
    flat = flatten_and_join(splits, "text")
    assert flat["train"].column_names.count(TEXT_COLUMN) == 1
    assert list(flat["train"][TEXT_COLUMN]) == ["kept line"]  # whitespace-only rows are dropped


def test_missing_text_field_names_the_setting_and_lists_columns(nested_splits):
    with pytest.raises(PipelineInputError) as caught:
        flatten_and_join(nested_splits, "answers.body")
    message = str(caught.value)
    assert "data.text_field='answers.body'" in message
    for column in ("q_id", "title", "answers.a_id", "answers.text", "answers.score"):
        assert column in message


def test_non_string_text_field_is_an_input_error(nested_splits):
    with pytest.raises(PipelineInputError, match="answers.score"):
        flatten_and_join(nested_splits, "answers.score")


# ---------------------------------------------------------------------------- flatten_dataset


def test_flatten_dataset_saves_the_flattened_splits(nested_splits, tmp_path):
    nested_splits.save_to_disk(str(tmp_path / "download" / "dataset"))
    flatten_dataset(tmp_path / "download", "answers.text", tmp_path / "out")
    saved = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert list(saved["train"][TEXT_COLUMN]) == ["First answer. Second answer.", "Only one."]


def test_flatten_dataset_rejects_a_split_with_no_text(tmp_path):
    splits = DatasetDict(
        {
            "train": Dataset.from_list(eli5_rows([["Some text."]])),
            "test": Dataset.from_list(eli5_rows([[], [""]])),
        }
    )
    splits.save_to_disk(str(tmp_path / "download" / "dataset"))
    with pytest.raises(PipelineInputError) as caught:
        flatten_dataset(tmp_path / "download", "answers.text", tmp_path / "out")
    assert "test split" in str(caught.value) and "answers.text" in str(caught.value)
    assert not (tmp_path / "out" / "dataset").exists()
