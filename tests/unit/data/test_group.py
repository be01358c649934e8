"""lmpipe.data.blocks (the group stage): concatenating token streams and cutting them into blocks, as the guide does."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk
from grouping import group_splits
from hypothesis import given, settings
from hypothesis import strategies as st

from lmpipe.data.blocks import GROUP_BATCH_ROWS, group_dataset, group_into_blocks
from lmpipe.errors import PipelineInputError
from lmpipe.models.batches import IGNORE_INDEX, NextTokenCollator
from lmpipe.store.publish import building

PAD_ID = 1
TOKENIZED_FEATURES = Features({"input_ids": List(Value("uint16"))})

# ---------------------------------------------------------------------------- the guide's reference

block_size = 128  # the guide's global, read by group_texts below; tests that vary it monkeypatch it


def group_texts(examples):
    concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // block_size) * block_size
    result = {
        k: [t[i : i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated_examples.items()
    }  # noqa: E501
    result["labels"] = result["input_ids"].copy()
    return result


# ---------------------------------------------------------------------------- helpers


def token_stream(n_tokens: int, seed: int) -> np.ndarray:
    """Random ids, dtyped like tokenizer output once it is in Arrow (a 50k vocabulary: uint16)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50_000, n_tokens).astype(np.uint16)


def random_tokenized_split(rng: np.random.Generator, rows: int, max_len: int = 60, vocab: int = 400) -> Dataset:
    """Rows of random length (empty rows included), shaped like tokenizer output."""
    lengths = rng.integers(0, max_len + 1, size=rows)
    ids = [rng.integers(0, vocab, size=n).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": ids}, features=TOKENIZED_FEATURES)


@pytest.fixture(scope="module")
def tokenized_splits() -> DatasetDict:
    rng = np.random.default_rng(1234)
    # More than one GROUP_BATCH_ROWS batch per split, with a short last batch.
    return DatasetDict(
        {
            "train": random_tokenized_split(rng, 2 * GROUP_BATCH_ROWS + 437),
            "test": random_tokenized_split(rng, GROUP_BATCH_ROWS + 61),
        }
    )


def as_lists(dataset: Dataset, column: str) -> list[list[int]]:
    return [list(row) for row in dataset[column]]


def batch_token_counts(split: Dataset) -> list[int]:
    return [
        sum(len(ids) for ids in split[start : start + GROUP_BATCH_ROWS]["input_ids"])
        for start in range(0, len(split), GROUP_BATCH_ROWS)
    ]


# ---------------------------------------------------------------------------- group_into_blocks properties


@st.composite
def streams(draw) -> tuple[np.ndarray, int]:
    """(ids, block_size) with anywhere from 0 to ~10 blocks' worth of tokens; n and size shrink."""
    size = draw(st.integers(2, 64))
    n_tokens = draw(st.integers(0, 10 * size + size - 1))
    return token_stream(n_tokens, seed=draw(st.integers(0, 2**32 - 1))), size


@settings(max_examples=100, deadline=None, database=None)
@given(stream=streams(), pad_id=st.integers(0, 50_000))
def test_drop_keeps_every_whole_block_in_order(stream, pad_id):
    ids, size = stream
    block_ids, block_mask, dropped = group_into_blocks(ids, size, "drop", pad_id)
    n_blocks = len(ids) // size
    assert block_ids.shape == block_mask.shape == (n_blocks, size)
    assert block_ids.ravel().tolist() == ids[: n_blocks * size].tolist()
    assert (block_mask == 1).all()  # packed: nothing to mask
    assert dropped == len(ids) % size
    assert n_blocks * size + dropped == len(ids)  # every token is either kept or counted as dropped


@settings(max_examples=100, deadline=None, database=None)
@given(stream=streams(), pad_id=st.integers(0, 50_000))
def test_pad_keeps_every_token_in_order_then_only_masked_padding(stream, pad_id):
    ids, size = stream
    pad_id = min(pad_id, 2**16 - 1)  # the ids' own type holds the pad id
    block_ids, block_mask, dropped = group_into_blocks(ids, size, "pad", pad_id)
    n = len(ids)
    assert dropped == 0
    assert block_ids.shape == block_mask.shape == (-(-n // size), size)  # ceil(n / size) blocks
    flat_ids, flat_mask = block_ids.ravel(), block_mask.ravel()
    assert flat_ids[:n].tolist() == ids.tolist()
    assert flat_mask[:n].tolist() == [1] * n
    padding = len(flat_ids) - n
    assert 0 <= padding < size
    assert flat_ids[n:].tolist() == [pad_id] * padding
    assert flat_mask[n:].tolist() == [0] * padding


@settings(max_examples=50, deadline=None, database=None)
@given(stream=streams())
def test_causal_labels_are_the_ids_except_ignored_where_unattended(stream):
    ids, size = stream
    block_ids, block_mask, _ = group_into_blocks(ids, size, "pad", PAD_ID)
    examples = [
        {"input_ids": i.tolist(), "attention_mask": m.tolist()} for i, m in zip(block_ids, block_mask, strict=True)
    ]
    labels = NextTokenCollator()(examples)["labels"].numpy().reshape(block_ids.shape)  # (blocks, size), maybe 0 blocks
    assert labels.shape == block_ids.shape
    assert (labels[block_mask == 1] == block_ids[block_mask == 1]).all()
    assert (labels[block_mask == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_grouping_keeps_the_token_dtype(dtype):
    ids = np.arange(10, dtype=dtype)
    for remainder in ("drop", "pad"):
        block_ids, block_mask, _ = group_into_blocks(ids, 4, remainder, PAD_ID)
        assert block_ids.dtype == dtype and block_mask.dtype == np.int8


# ---------------------------------------------------------------------------- group_splits vs the guide


@pytest.mark.parametrize("size", [16, 128])
def test_drop_grouping_equals_the_guides_group_texts(tokenized_splits, size, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "block_size", size)
    ours, dropped = group_splits(tokenized_splits, size, "drop", PAD_ID)
    guide = tokenized_splits.map(group_texts, batched=True)
    for split in ("train", "test"):
        assert len(tokenized_splits[split]) > GROUP_BATCH_ROWS  # several map batches are exercised
        assert ours[split].column_names == ["input_ids"]  # no padding, so no mask; labels are the collator's
        assert len(ours[split]) == len(guide[split]) > 0
        assert as_lists(ours[split], "input_ids") == as_lists(guide[split], "input_ids"), f"{split}.input_ids"
        labels = NextTokenCollator()(list(ours[split]))["labels"].tolist()
        assert labels == as_lists(guide[split], "labels"), f"{split}.labels"
        assert dropped[split] == sum(count % size for count in batch_token_counts(tokenized_splits[split]))


def test_pad_grouping_ignores_exactly_the_padding_in_labels(tokenized_splits):
    size = 128
    grouped, dropped = group_splits(tokenized_splits, size, "pad", PAD_ID)
    for split in ("train", "test"):
        ids = np.array(as_lists(grouped[split], "input_ids"))
        mask = np.array(as_lists(grouped[split], "attention_mask"))
        labels = NextTokenCollator()(list(grouped[split]))["labels"].numpy()
        counts = batch_token_counts(tokenized_splits[split])
        assert dropped[split] == 0
        assert int(mask.sum()) == sum(counts)  # every token kept
        assert len(ids) == sum(-(-count // size) for count in counts)  # one padded tail per batch
        assert (mask == 0).any()
        assert ((labels == IGNORE_INDEX) == (mask == 0)).all()
        assert (labels[mask == 1] == ids[mask == 1]).all()
        assert (ids[mask == 0] == PAD_ID).all()


def test_blocks_store_no_column_nothing_reads(tokenized_splits):
    packed, _ = group_splits(tokenized_splits, 64, "drop", PAD_ID)
    padded, _ = group_splits(tokenized_splits, 64, "pad", PAD_ID)
    for split in ("train", "test"):
        assert packed[split].column_names == ["input_ids"], "no labels, and no mask without padding"
        assert padded[split].column_names == ["input_ids", "attention_mask"]
        assert packed[split].features["input_ids"].feature.dtype == "uint16", "a 400-token vocabulary fits uint16"


# ---------------------------------------------------------------------------- group_dataset


@pytest.fixture()
def tokenize_dir(tmp_path, tiny_tokenizer, sample_texts):
    """A published tokenize artifact: a long train split and a test split of one short text."""
    directory = tmp_path / "tokenize"
    encode = lambda texts: Dataset.from_dict(dict(tiny_tokenizer(texts)))  # noqa: E731
    with building(directory, "tokenize", {}) as scratch:
        tiny_tokenizer.save_pretrained(str(scratch / "tokenizer"))
        DatasetDict({"train": encode(sample_texts[:40]), "test": encode(["Hi there."])}).save_to_disk(
            str(scratch / "dataset")
        )
    return directory


def test_every_split_too_short_for_one_block_names_the_count_and_block_size(tiny_tokenizer, tmp_path):
    directory = tmp_path / "tokenize"
    tiny_tokenizer.save_pretrained(str(directory / "tokenizer"))
    encoded = Dataset.from_dict(dict(tiny_tokenizer(["A short text.", "Another one."])))
    DatasetDict({"train": encoded, "test": encoded}).save_to_disk(str(directory / "dataset"))
    train_tokens = sum(len(ids) for ids in encoded["input_ids"])
    with pytest.raises(PipelineInputError) as caught:
        group_dataset(directory, 64, "drop", out_dir=tmp_path / "out")
    message = str(caught.value)
    assert "data.block_size=64" in message
    assert f"the train split has {train_tokens} tokens" in message
    assert "\n" not in message


def test_too_few_test_tokens_for_one_block_names_the_count_and_block_size(tokenize_dir, tiny_tokenizer, tmp_path):
    test_tokens = len(tiny_tokenizer("Hi there.")["input_ids"])
    with pytest.raises(PipelineInputError) as caught:
        group_dataset(tokenize_dir, 32, "drop", out_dir=tmp_path / "out")
    message = str(caught.value)
    assert "data.block_size=32" in message
    assert f"the test split has {test_tokens} tokens" in message
    assert "\n" not in message
    assert not (tmp_path / "out" / "dataset").exists()


def test_a_split_without_blocks_comes_back_empty_with_all_tokens_dropped():
    long_row, short_row = list(range(2, 102)), [2, 3, 4]

    def rows(ids: list[int]) -> Dataset:
        return Dataset.from_dict({"input_ids": [ids]}, features=TOKENIZED_FEATURES)

    splits = DatasetDict({"train": rows(long_row), "test": rows(short_row)})
    grouped, dropped = group_splits(splits, 32, "drop", PAD_ID)
    assert len(grouped["train"]) == 3 and len(grouped["test"]) == 0
    assert dropped == {"train": 100 % 32, "test": 3}
    assert "dropped_tokens" not in grouped["train"].column_names + grouped["test"].column_names


def test_pad_policy_fits_a_short_split_and_pads_with_the_tokenizers_pad_id(tokenize_dir, tiny_tokenizer, tmp_path):
    test_tokens = len(tiny_tokenizer("Hi there.")["input_ids"])
    group_dataset(tokenize_dir, 32, "pad", out_dir=tmp_path / "out")
    saved = load_from_disk(str(tmp_path / "out" / "dataset"))
    (test_block,) = as_lists(saved["test"], "input_ids")
    assert test_block[test_tokens:] == [tiny_tokenizer.pad_token_id] * (32 - test_tokens)
    report = json.loads((tmp_path / "out" / "group_report.json").read_text())
    assert report["test"] == {"blocks": 1, "dropped_tokens": 0}
    assert report["train"]["blocks"] == len(saved["train"]) > 1


def test_group_report_counts_dropped_tokens(tokenize_dir, tmp_path):
    tokenized = load_from_disk(str(tokenize_dir / "dataset"))
    train_tokens = sum(len(ids) for ids in tokenized["train"]["input_ids"])
    group_dataset(tokenize_dir, 4, "drop", out_dir=tmp_path / "out")
    report = json.loads((tmp_path / "out" / "group_report.json").read_text())
    assert report["train"] == {"blocks": train_tokens // 4, "dropped_tokens": train_tokens % 4}


def test_dropped_count_includes_batches_that_make_no_block():
    # Batch 1: 1000 one-token rows -> 31 blocks of 32, 8 dropped. Batch 2: one 5-token row -> no block, 5 dropped.
    rows = [[7]] * 1000 + [[1, 2, 3, 4, 5]]
    data = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    grouped, dropped = group_splits(DatasetDict(train=data), 32, "drop", PAD_ID)
    assert len(grouped["train"]) == 31
    assert dropped == {"train": 13}
