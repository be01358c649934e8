"""lmpipe.evaluation.other_tokenizer: one evaluation text, re-cut for a model that reads another tokenizer."""

from __future__ import annotations

import copy
from itertools import pairwise

import pytest
from datasets import Dataset, DatasetDict
from grouping import group_splits

from lmpipe.config.loading import load_config
from lmpipe.config.schema import ModelConfig
from lmpipe.data.tokenizers import train_bpe_tokenizer
from lmpipe.evaluation.other_tokenizer import retokenized_blocks, special_token_map
from lmpipe.evaluation.perplexity import model_bits_per_byte
from lmpipe.models.base import build_base_model

BLOCK_SIZE = 32
TINY_MODEL = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)


@pytest.fixture(scope="module")
def coarse_tokenizer(sample_texts):
    """Another byte-level BPE on the same text, with more merges: fewer, longer tokens."""
    return train_bpe_tokenizer([sample_texts], vocab_size=900, min_frequency=2)


def grouped(tokenizer, texts, remainder="drop", size=BLOCK_SIZE) -> Dataset:
    encoded = Dataset.from_dict(dict(tokenizer(texts)))
    blocks, _ = group_splits(DatasetDict({"train": encoded, "test": encoded}), size, remainder, tokenizer.pad_token_id)
    return blocks["test"]


def attended(rows: Dataset) -> list[int]:
    """Every token of the rows that is not padding, in order."""
    return [
        i
        for row, mask in zip(rows["input_ids"], rows["attention_mask"], strict=True)
        for i, m in zip(row, mask, strict=True)
        if m
    ]


def test_the_same_tokenizer_gives_back_whole_documents_unchanged(tiny_tokenizer, sample_texts):
    # One document per block (padded): re-tokenizing its text with the same tokenizer is the identity.
    short = [text for text in sample_texts if len(tiny_tokenizer(text)["input_ids"]) <= BLOCK_SIZE][:10]
    blocks = Dataset.from_dict(
        {
            "input_ids": [ids + [1] * (BLOCK_SIZE - len(ids)) for ids in tiny_tokenizer(short)["input_ids"]],
            "attention_mask": [
                [1] * len(ids) + [0] * (BLOCK_SIZE - len(ids)) for ids in tiny_tokenizer(short)["input_ids"]
            ],
        }
    )
    again = retokenized_blocks(blocks, tiny_tokenizer, tiny_tokenizer, BLOCK_SIZE)
    assert again["input_ids"] == blocks["input_ids"] and again["attention_mask"] == blocks["attention_mask"]


def test_another_tokenizer_reads_the_same_text_with_the_same_boundaries(tiny_tokenizer, coarse_tokenizer, sample_texts):
    blocks = grouped(tiny_tokenizer, sample_texts[:8])
    assert "attention_mask" not in blocks.column_names  # packed blocks store none
    recut = retokenized_blocks(blocks, tiny_tokenizer, coarse_tokenizer, 4 * BLOCK_SIZE)  # room: one row per block
    assert len(recut) == len(blocks)
    for source, target in zip(blocks["input_ids"], recut, strict=True):
        ids = [i for i, m in zip(target["input_ids"], target["attention_mask"], strict=True) if m]
        assert coarse_tokenizer.decode(ids, skip_special_tokens=True) == tiny_tokenizer.decode(
            source, skip_special_tokens=True
        )
        # </s> and <s> are where they were: the same documents, the same ends.
        assert [coarse_tokenizer.convert_ids_to_tokens(i) for i in ids if i in coarse_tokenizer.all_special_ids] == [
            tiny_tokenizer.convert_ids_to_tokens(i) for i in source if i in tiny_tokenizer.all_special_ids
        ]
    assert sum(map(sum, recut["attention_mask"])) < sum(map(len, blocks["input_ids"]))  # coarser: fewer tokens


def test_a_unit_longer_than_the_models_blocks_is_cut_into_blocks_of_its_size(
    tiny_tokenizer, coarse_tokenizer, sample_texts
):
    blocks = grouped(coarse_tokenizer, sample_texts[:8], size=48)  # long units of coarse tokens
    wide = retokenized_blocks(blocks, coarse_tokenizer, tiny_tokenizer, 1000)
    narrow = retokenized_blocks(blocks, coarse_tokenizer, tiny_tokenizer, 16)
    assert len(narrow) > len(wide) == len(blocks)
    assert all(len(row) == 16 for row in narrow["input_ids"])
    assert all(sum(mask) >= 2 for mask in narrow["attention_mask"])  # a 1-token piece predicts nothing: left out
    # Cutting keeps every token in order, but for 1-token tails.
    kept, whole = attended(narrow), attended(wide)
    assert len(whole) - len(blocks) <= len(kept) <= len(whole)


def test_special_tokens_map_by_role_and_a_shared_boundary_token_is_written_once(tiny_tokenizer, sample_texts):
    gpt2_like = copy.deepcopy(tiny_tokenizer)
    gpt2_like.bos_token = gpt2_like.eos_token  # one <|endoftext|> for both, as GPT-2's
    eos = gpt2_like.eos_token_id
    mapping = special_token_map(tiny_tokenizer, gpt2_like)
    assert mapping[tiny_tokenizer.bos_token_id] == mapping[tiny_tokenizer.eos_token_id] == eos
    blocks = grouped(tiny_tokenizer, sample_texts[:8])
    recut = retokenized_blocks(blocks, tiny_tokenizer, gpt2_like, 4 * BLOCK_SIZE)
    for source, target in zip(blocks["input_ids"], recut["input_ids"], strict=True):
        bos, end = tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id
        boundaries = sum(1 for pair in pairwise(source) if pair == (end, bos))
        ends = source.count(end) + source.count(bos) - boundaries  # each </s><s> becomes one token
        assert target.count(eos) == ends
        assert all((a, b) != (eos, eos) for a, b in pairwise(target))


def test_the_same_model_scores_about_the_same_on_its_own_text_re_cut(tiny_tokenizer, sample_texts):
    model = build_base_model("clm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)
    blocks = grouped(tiny_tokenizer, sample_texts[:8])
    config = load_config(overrides=[f"data.block_size={BLOCK_SIZE}"])
    own = model_bits_per_byte(model, tiny_tokenizer, blocks, config, "cpu")
    recut = model_bits_per_byte(
        model, tiny_tokenizer, retokenized_blocks(blocks, tiny_tokenizer, tiny_tokenizer, BLOCK_SIZE), config, "cpu"
    )
    # Re-encoding a block that starts or ends mid-word may merge its edge differently; the rest is the same.
    assert recut == pytest.approx(own, rel=0.02)
