"""lmpipe.evaluation.perplexity: perplexity from loss, and the token-weighted loss on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from grouping import group_splits

from lmpipe.config.loading import load_config
from lmpipe.config.schema import ModelConfig
from lmpipe.errors import PipelineInputError
from lmpipe.evaluation.eval_set import eval_set_fingerprint
from lmpipe.evaluation.perplexity import perplexity_from_loss, token_weighted_loss
from lmpipe.models.base import build_base_model
from lmpipe.models.batches import evaluation_batches

BLOCK_SIZE = 32
TINY_MODEL = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)


@pytest.fixture(scope="module")
def test_blocks(tiny_tokenizer, sample_texts) -> Dataset:
    """A few dozen CLM blocks cut from real tokenized text, remainder dropped."""
    encoded = Dataset.from_dict(dict(tiny_tokenizer(sample_texts[:8])))
    grouped, _ = group_splits(
        DatasetDict({"train": encoded, "test": encoded}),
        BLOCK_SIZE,
        "drop",
        tiny_tokenizer.pad_token_id,
    )
    blocks = grouped["test"]
    assert 5 < len(blocks) < 100
    return blocks


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_tokenizer):
    return build_base_model("clm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)


@pytest.fixture(scope="module")
def tiny_roberta(tiny_tokenizer):
    return build_base_model("mlm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)


# ---------------------------------------------------------------------------- perplexity


def test_perplexity_of_zero_loss_is_one():
    assert perplexity_from_loss(0.0) == 1.0


def test_perplexity_is_exp_of_the_loss():
    assert perplexity_from_loss(math.log(50)) == pytest.approx(50)


def test_huge_loss_is_infinite_perplexity_not_an_error():
    assert perplexity_from_loss(1e6) == math.inf


# ---------------------------------------------------------------------------- token-weighted loss


def test_clm_loss_counts_every_predicted_token(tiny_gpt2, tiny_tokenizer, test_blocks):
    collator = evaluation_batches("clm", tiny_tokenizer, mlm_probability=0.15, mlm_seed=0)
    loss, tokens = token_weighted_loss(tiny_gpt2, test_blocks, collator, "clm", batch_size=8, device="cpu")
    assert math.isfinite(loss)
    assert tokens == len(test_blocks) * (BLOCK_SIZE - 1)  # token t predicts t+1 in every full block
    # A freshly initialised model is close to uniform over the vocabulary.
    assert loss == pytest.approx(math.log(len(tiny_tokenizer)), abs=0.5)


def test_clm_loss_matches_the_models_own_mean_loss_on_full_blocks(tiny_gpt2, tiny_tokenizer, test_blocks):
    collator = evaluation_batches("clm", tiny_tokenizer, mlm_probability=0.15, mlm_seed=0)
    loss, _ = token_weighted_loss(tiny_gpt2, test_blocks, collator, "clm", batch_size=4, device="cpu")
    ids = torch.tensor(test_blocks["input_ids"])
    with torch.no_grad():
        reference = tiny_gpt2(input_ids=ids, labels=ids).loss.item()
    assert loss == pytest.approx(reference, rel=1e-4)


def test_clm_loss_does_not_depend_on_batch_size(tiny_gpt2, tiny_tokenizer, test_blocks):
    collator = evaluation_batches("clm", tiny_tokenizer, mlm_probability=0.15, mlm_seed=0)
    small, _ = token_weighted_loss(tiny_gpt2, test_blocks, collator, "clm", batch_size=5, device="cpu")
    whole, _ = token_weighted_loss(tiny_gpt2, test_blocks, collator, "clm", batch_size=len(test_blocks), device="cpu")
    assert small == pytest.approx(whole, rel=1e-5)


def test_mlm_loss_is_reproducible_with_the_same_seed(tiny_roberta, tiny_tokenizer, test_blocks):
    def loss_with(seed: int) -> tuple[float, int]:
        collator = evaluation_batches("mlm", tiny_tokenizer, mlm_probability=0.15, mlm_seed=seed)  # fresh each time
        return token_weighted_loss(tiny_roberta, test_blocks, collator, "mlm", batch_size=8, device="cpu")

    first, again, other = loss_with(1234), loss_with(1234), loss_with(99)
    assert first == again  # exactly: same masks, same number
    assert other[0] != first[0]
    loss, tokens = first
    assert math.isfinite(loss)
    total = len(test_blocks) * BLOCK_SIZE
    assert 0.05 * total < tokens < 0.3 * total  # about mlm_probability of the tokens are predicted


def test_blocks_with_nothing_to_predict_are_an_input_error(tiny_gpt2, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    only_padding = Dataset.from_dict({"input_ids": [[pad] * BLOCK_SIZE] * 2, "attention_mask": [[0] * BLOCK_SIZE] * 2})
    collator = evaluation_batches("clm", tiny_tokenizer, mlm_probability=0.15, mlm_seed=0)
    with pytest.raises(PipelineInputError, match="no token to predict"):
        token_weighted_loss(tiny_gpt2, only_padding, collator, "clm", batch_size=2, device="cpu")


def test_base_model_is_deterministic_for_a_seed(tiny_tokenizer, tiny_gpt2):
    again = build_base_model("clm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)
    other = build_base_model("clm", TINY_MODEL, tiny_tokenizer, seed=1, block_size=BLOCK_SIZE)
    weights = tiny_gpt2.state_dict()
    assert all(torch.equal(weights[name], tensor) for name, tensor in again.state_dict().items())
    assert not torch.equal(weights["transformer.wte.weight"], other.state_dict()["transformer.wte.weight"])


# ---------------------------------------------------------------------------- the evaluation set's identity


def group_dir(root: Path, key: str, test_blocks: int = 100) -> Path:
    """A blocks artifact as the fingerprint sees it: its content key and the group stage's report."""
    directory = root / "group" / key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "group_report.json").write_text(json.dumps({"test": {"blocks": test_blocks, "dropped_tokens": 0}}))
    return directory


def test_mlm_eval_set_fingerprint_tracks_what_decides_the_masks(tmp_path):
    blocks = group_dir(tmp_path / "artifacts", "abc123")
    base = eval_set_fingerprint(blocks, load_config(), "mlm")
    assert eval_set_fingerprint(blocks, load_config(), "mlm") == base
    assert eval_set_fingerprint(group_dir(tmp_path / "elsewhere", "abc123"), load_config(), "mlm") == base  # by key
    for override in ("eval.mlm_seed=1", "eval.max_blocks=10", "train.mlm_probability=0.2", "eval.batch_size=1"):
        assert eval_set_fingerprint(blocks, load_config(overrides=[override]), "mlm") != base, override
    assert eval_set_fingerprint(group_dir(tmp_path / "artifacts", "def456"), load_config(), "mlm") != base


def test_clm_eval_set_ignores_masking_and_batch_size(tmp_path):
    # Token-weighted CLM loss does not depend on how the blocks are batched, and nothing is masked.
    blocks = group_dir(tmp_path / "artifacts", "abc123")
    base = eval_set_fingerprint(blocks, load_config(), "clm")
    for override in ("eval.mlm_seed=1", "train.mlm_probability=0.2", "eval.batch_size=1"):
        assert eval_set_fingerprint(blocks, load_config(overrides=[override]), "clm") == base, override
    assert eval_set_fingerprint(blocks, load_config(overrides=["eval.max_blocks=10"]), "clm") != base


def test_mlm_masks_depend_on_batch_size_so_the_fingerprint_must_too(tiny_tokenizer):
    ids = torch.arange(5, 5 + 8 * 16).reshape(8, 16) % len(tiny_tokenizer)
    features = [{"input_ids": row.tolist(), "attention_mask": [1] * 16} for row in ids]

    def masks(batch_size: int) -> torch.Tensor:
        collator = evaluation_batches("mlm", tiny_tokenizer, 0.15, mlm_seed=1234)
        batches = [collator(features[i : i + batch_size])["labels"] for i in range(0, len(features), batch_size)]
        return torch.cat(batches) != -100

    assert not torch.equal(masks(2), masks(8))
