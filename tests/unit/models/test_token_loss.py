"""The loss training logs and evaluation reports: a mean over the tokens actually scored, EOS included.

transformers 5.23's Trainer divides a GPT-2 block's loss by all of its tokens although the first is
never a target, and `DataCollatorForLanguageModeling(mlm=False)` drops every token equal to the pad
token from the labels, which for GPT-2's tokenizer (pad = eos) is every end of document. Both are
checked here against plain computations.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.evaluation.perplexity import token_weighted_loss
from lmpipe.models.base import build_base_model
from lmpipe.models.batches import IGNORE_INDEX, evaluation_batches, training_batches
from lmpipe.training.job import TrainingJob
from lmpipe.training.loop import train_model

BLOCK = 32
NO_DROPOUT = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64, dropout=0.0)


@pytest.fixture(scope="module")
def gpt2_style_tokenizer(sample_texts) -> PreTrainedTokenizerFast:
    """GPT-2's arrangement: one special token, <|endoftext|>, ending every text and standing in as pad."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(sample_texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"]))
    eos = backend.token_to_id("<|endoftext|>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.pad_token = tokenizer.eos_token  # as the guide does for GPT-2, and as training does when pad is missing
    return tokenizer


def packed_blocks(tokenizer, texts: list[str], rows: int) -> list[dict[str, list[int]]]:
    """Consecutive texts, each ending in EOS, packed into full blocks: no padding anywhere."""
    ids = [token for text in texts for token in tokenizer(text)["input_ids"]]
    blocks = [ids[i : i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)][:rows]
    return [{"input_ids": block, "attention_mask": [1] * BLOCK} for block in blocks]


def test_eos_is_a_training_and_evaluation_target_with_a_pad_eos_tokenizer(gpt2_style_tokenizer, sample_texts):
    tokenizer = gpt2_style_tokenizer
    blocks = packed_blocks(tokenizer, sample_texts, rows=32)
    ids = torch.tensor([block["input_ids"] for block in blocks])
    eos_positions = ids == tokenizer.eos_token_id
    assert eos_positions[:, 1:].sum() >= 5, "the blocks must hold document ends to score"

    train_collator, _ = training_batches("clm", tokenizer, 0.15, seed=0)
    for collator in (train_collator, evaluation_batches("clm", tokenizer, 0.15, mlm_seed=0)):
        labels = collator(blocks)["labels"]
        assert torch.equal(labels, ids), "packed blocks: every token is a target, EOS included"
    # What transformers' collator does with the same tokenizer: every EOS is dropped from the loss.
    theirs = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)(blocks)["labels"]
    assert (theirs[eos_positions] == IGNORE_INDEX).all()

    model = build_base_model("clm", NO_DROPOUT, tokenizer, seed=0, block_size=BLOCK)
    loss, scored = token_weighted_loss(
        model, Dataset.from_list(blocks), evaluation_batches("clm", tokenizer, 0.15, 0), "clm", 4, "cpu"
    )
    assert scored == len(blocks) * (BLOCK - 1)  # every next token, EOS included
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    plain = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).item()
    assert loss == pytest.approx(plain, rel=1e-5)


def test_logged_train_loss_is_the_mean_over_scored_tokens(tiny_tokenizer, sample_texts, tmp_path):
    """One block repeated: every batch is the same, so the loss logged at step 1 (before any update) is the
    base model's loss on that block, computed here the plain way: the mean over its BLOCK - 1 targets."""
    block = packed_blocks(tiny_tokenizer, sample_texts, rows=1)[0]
    blocks = Dataset.from_list([block] * 32)
    DatasetDict(train=blocks, test=blocks).save_to_disk(str(tmp_path / "blocks" / "dataset"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    train = TrainConfig(max_steps=3, batch_size=4, logging_steps=1, checkpoint_steps=None, warmup_ratio=0.0)
    job = TrainingJob(
        objective="clm",
        blocks_dir=str(tmp_path / "blocks"),
        tokenizer_dir=str(tmp_path / "tokenizer"),
        model=NO_DROPOUT,
        train=train,
        block_size=BLOCK,
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    (tmp_path / "model").mkdir()
    metrics = train_model(job, tmp_path / "model")

    ids = torch.tensor([block["input_ids"]])
    model = build_base_model("clm", NO_DROPOUT, tiny_tokenizer, seed=train.seed, block_size=BLOCK)
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (1, block, vocab)
    plain = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item() / (BLOCK - 1)
    history = json.loads((tmp_path / "model" / "train_history.json").read_text())
    assert [entry["step"] for entry in history] == [1, 2, 3]
    assert history[0]["loss"] == pytest.approx(plain, rel=1e-4)
    # What the Trainer itself reports: divided by BLOCK tokens, BLOCK - 1 of them scored.
    assert not math.isclose(history[0]["loss"], plain * (BLOCK - 1) / BLOCK, rel_tol=1e-4)
    # The run's train_loss is the mean over every scored token of the three steps (equal batch sizes).
    assert metrics["train_loss"] == pytest.approx(sum(entry["loss"] for entry in history) / 3, rel=1e-6)
