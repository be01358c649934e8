"""The reported training loss is read off the model's own loss, and must equal the loss recomputed
from the logits on every batch: for both objectives, with gradient accumulation (where the Trainer's
count spans several batches), and for a model whose loss is not a plain mean."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset, DatasetDict

from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.data.blocks import group_saved
from lmpipe.data.tokenize import tokenize_saved
from lmpipe.models.loss import scored_token_count, summed_token_loss
from lmpipe.training import scored_loss
from lmpipe.training.job import TrainingJob
from lmpipe.training.loop import train_model
from lmpipe.training.scored_loss import ScoredLoss, learn_divisor

BLOCK = 32
TINY = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)


def test_the_divisor_is_the_count_that_gives_back_the_sum():
    # GPT-2 with the Trainer's count: 4 blocks of 32 labels, 31 scored each.
    assert learn_divisor(exact_sum=620.0, model_loss=620.0 / 128, scored=124, items=128) == "items"
    # A mean over the scored tokens (RoBERTa's masked-LM head), with and without a count from the Trainer.
    assert learn_divisor(exact_sum=90.0, model_loss=90.0 / 20, scored=20, items=20) == "scored"
    assert learn_divisor(exact_sum=90.0, model_loss=90.0 / 20, scored=20, items=45) == "scored"
    assert learn_divisor(exact_sum=90.0, model_loss=90.0 / 20, scored=20, items=None) == "scored"
    # Neither: an auxiliary loss added on top.
    assert learn_divisor(exact_sum=90.0, model_loss=90.0 / 20 + 0.01, scored=20, items=20) == "recompute"
    # Two different counts both within rounding of the sum (a block of a million tokens): cannot tell.
    blocks = 1_000_000
    assert learn_divisor(exact_sum=1.0 * blocks, model_loss=1.0, scored=blocks - 1, items=blocks) == "recompute"


def test_a_loss_that_is_not_a_plain_mean_is_recomputed_every_batch():
    torch.manual_seed(0)
    tracked = ScoredLoss("clm")
    exact_sum = exact_tokens = 0.0
    for _ in range(3):
        logits, labels = torch.randn(2, 8, 11), torch.randint(0, 11, (2, 8))
        loss_sum, tokens = summed_token_loss("clm", logits, labels)
        exact_sum, exact_tokens = exact_sum + loss_sum.item(), exact_tokens + tokens.item()
        model_loss = loss_sum / tokens + 0.5  # e.g. a mixture-of-experts' router loss on top
        tracked.add_batch(model_loss, logits, labels, num_items_in_batch=int(tokens))
    assert tracked.divisor == "recompute"
    assert tracked.overall_mean() == pytest.approx(exact_sum / exact_tokens, rel=1e-12)
    assert int(scored_token_count("clm", labels)) == 2 * 7


@pytest.fixture(scope="module")
def blocks_and_tokenizer(tmp_path_factory, tiny_tokenizer, sample_texts):
    work = tmp_path_factory.mktemp("scored-loss")
    texts = [text for text in sample_texts if text.strip()]
    DatasetDict(train=Dataset.from_dict({"text": texts}), test=Dataset.from_dict({"text": texts[:8]})).save_to_disk(
        str(work / "flat")
    )
    tiny_tokenizer.save_pretrained(str(work / "tokenizer"))
    tokenize_saved(work / "flat", tiny_tokenizer, 1, work / "tokenize" / "dataset")
    group_saved(work / "tokenize" / "dataset", work / "blocks" / "dataset", BLOCK, "drop", 0)
    return work


def logged_losses(work, objective, tag) -> tuple[list[float], float]:
    train = TrainConfig(
        max_steps=6, batch_size=4, grad_accum=2, logging_steps=1, checkpoint_steps=None, learning_rate=1e-2
    )
    job = TrainingJob(
        objective=objective,
        blocks_dir=str(work / "blocks"),
        tokenizer_dir=str(work / "tokenizer"),
        model=TINY,
        train=train,
        block_size=BLOCK,
        checkpoint_dir=str(work / f"checkpoints-{objective}-{tag}"),
    )
    out = work / f"model-{objective}-{tag}"
    out.mkdir()
    metrics = train_model(job, out)
    history = json.loads((out / "train_history.json").read_text())
    return [entry["loss"] for entry in history], metrics["train_loss"]


@pytest.mark.parametrize(("objective", "divisor"), [("clm", "items"), ("mlm", "scored")])
def test_the_loss_read_off_the_model_equals_the_loss_recomputed_every_batch(
    blocks_and_tokenizer, monkeypatch, objective, divisor
):
    learnt: list[str] = []
    real_learn = scored_loss.learn_divisor

    def recording(*args, **kwargs):
        learnt.append(real_learn(*args, **kwargs))
        return learnt[-1]

    monkeypatch.setattr(scored_loss, "learn_divisor", recording)
    derived, derived_total = logged_losses(blocks_and_tokenizer, objective, "derived")
    assert learnt == [divisor], "learnt once, on the first batch"

    # The same run with the cross-entropy recomputed on every batch: the gradient path is the same, so
    # the weights and batches are too, and every logged loss must agree.
    monkeypatch.setattr(scored_loss, "learn_divisor", lambda *args, **kwargs: "recompute")
    recomputed, recomputed_total = logged_losses(blocks_and_tokenizer, objective, "recomputed")
    assert len(derived) == 6
    assert derived == pytest.approx(recomputed, rel=1e-5)
    assert derived_total == pytest.approx(recomputed_total, rel=1e-5)
