"""lmpipe.models.batches: MLM masks depend on (seed, epoch, block) only."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmpipe.models.batches import ResumableMaskingCollator

IGNORE = -100


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, **{f"w{i}": i + 5 for i in range(200)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>",
    )  # fmt: skip


def blocks(n: int, length: int = 64) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {"input_ids": [0, *torch.randint(5, 205, (length - 2,), generator=generator).tolist(), 2]} for _ in range(n)
    ]


def test_a_blocks_masks_do_not_depend_on_its_batch(tokenizer):
    data = blocks(8)
    collator = ResumableMaskingCollator(tokenizer, 0.15, seed=42)
    together = collator(data)
    one_by_one = [collator([block]) for block in data]
    assert torch.equal(together["input_ids"], torch.cat([b["input_ids"] for b in one_by_one]))
    assert torch.equal(together["labels"], torch.cat([b["labels"] for b in one_by_one]))
    reversed_batch = collator(data[::-1])
    assert torch.equal(reversed_batch["labels"], together["labels"].flip(0))


def test_masks_change_with_the_epoch_and_the_seed(tokenizer):
    data = blocks(8)
    collator = ResumableMaskingCollator(tokenizer, 0.15, seed=42)
    first = collator(data)["labels"]
    collator.epoch = 1
    assert not torch.equal(collator(data)["labels"], first)
    assert not torch.equal(ResumableMaskingCollator(tokenizer, 0.15, seed=7)(data)["labels"], first)


def test_about_the_configured_share_is_masked_and_never_a_special_token(tokenizer):
    batch = ResumableMaskingCollator(tokenizer, 0.15, seed=1)(blocks(64))
    predicted = batch["labels"] != IGNORE
    share = predicted[:, 1:-1].float().mean().item()
    assert 0.12 < share < 0.18, share
    assert not predicted[:, 0].any() and not predicted[:, -1].any()  # <s> and </s>
    masked_to_mask_token = (batch["input_ids"] == tokenizer.mask_token_id) & predicted
    assert 0.7 < masked_to_mask_token.sum().item() / predicted.sum().item() < 0.9  # 80% become <mask>
