"""lmpipe.evaluation.bits_per_byte: the causal LM's loss per byte of scored text, checked against computations
written here from the model's own outputs and the tokenizer's own decoding."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from grouping import group_splits

from lmpipe.config.loading import load_config
from lmpipe.config.schema import ModelConfig
from lmpipe.evaluation import bits_per_byte as bpb_module
from lmpipe.evaluation.bits_per_byte import bits_per_byte, byte_lengths, scored_bytes
from lmpipe.evaluation.perplexity import evaluate_models, model_bits_per_byte, token_weighted_loss
from lmpipe.models.base import build_base_model
from lmpipe.models.batches import NextTokenCollator

BLOCK_SIZE = 32
TINY_MODEL = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)
TINY_OVERRIDES = [
    f"data.block_size={BLOCK_SIZE}",
    "train.seed=0",  # the base model evaluate builds is then the saved model itself
    *(f"model.{o}.{k}={v}" for o in ("clm", "mlm") for k, v in TINY_MODEL.model_dump().items() if v is not None),
]


@pytest.fixture(scope="module")
def test_blocks(tiny_tokenizer, sample_texts) -> Dataset:
    """CLM blocks cut from real tokenized text (ASCII: stdlib docstrings), remainder dropped."""
    assert all(text.isascii() for text in sample_texts[:8])  # so decoding each block alone is exact, see below
    encoded = Dataset.from_dict(dict(tiny_tokenizer(sample_texts[:8])))
    grouped, _ = group_splits(
        DatasetDict({"train": encoded, "test": encoded}), BLOCK_SIZE, "drop", tiny_tokenizer.pad_token_id
    )
    return grouped["test"]


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_tokenizer):
    return build_base_model("clm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)


def measured(model, tokenizer, blocks) -> tuple[float, float, int, int]:
    """(bits per byte, mean loss, scored tokens, bytes) as evaluation computes them."""
    loss, tokens = token_weighted_loss(model, blocks, NextTokenCollator(), "clm", batch_size=5, device="cpu")
    nbytes = scored_bytes(blocks, tokenizer, NextTokenCollator(), "clm", batch_size=3)
    return bits_per_byte(loss, tokens, nbytes), loss, tokens, nbytes


# ---------------------------------------------------------------------------- against an independent computation


def test_bits_per_byte_is_the_summed_log2_loss_over_the_bytes_of_the_scored_text(
    tiny_gpt2, tiny_tokenizer, test_blocks
):
    bpb, _, tokens, nbytes = measured(tiny_gpt2, tiny_tokenizer, test_blocks)

    # Independently: run the model on each block, sum -log2 p(next token), and count the UTF-8 bytes of the
    # text the predicted tokens decode to (special tokens stand for no text).
    bits, text_bytes, predicted = 0.0, 0, 0
    with torch.no_grad():
        for ids in test_blocks["input_ids"]:
            ids = torch.tensor(ids)
            log_probs = torch.log_softmax(tiny_gpt2(ids[None]).logits[0].double(), dim=-1)  # (block, vocab)
            bits -= log_probs[:-1].gather(1, ids[1:, None]).sum().item() / math.log(2)
            text = tiny_tokenizer.decode(ids[1:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            text_bytes += len(text.encode("utf-8"))
            predicted += len(ids) - 1
    assert (tokens, nbytes) == (predicted, text_bytes)
    assert bpb == pytest.approx(bits / text_bytes, rel=1e-5)


def test_a_model_that_knows_nothing_costs_log2_vocab_bits_per_token(tiny_tokenizer, test_blocks):
    class Uniform(torch.nn.Module):  # equal logits for every token: p = 1 / vocab everywhere
        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, len(tiny_tokenizer))})()

    bpb, loss, tokens, nbytes = measured(Uniform(), tiny_tokenizer, test_blocks)
    assert loss == pytest.approx(math.log(len(tiny_tokenizer)))
    assert bpb == pytest.approx(math.log2(len(tiny_tokenizer)) * tokens / nbytes)


def test_bits_per_byte_is_per_byte_not_per_token(tiny_gpt2, tiny_tokenizer, test_blocks):
    bpb, loss, tokens, nbytes = measured(tiny_gpt2, tiny_tokenizer, test_blocks)
    assert bpb == pytest.approx(loss / math.log(2) / (nbytes / tokens))  # bits per token / bytes per token
    assert nbytes > 1.5 * tokens  # even a 400-entry BPE merges bytes: it has fewer tokens than bytes


# ---------------------------------------------------------------------------- what counts as a byte


def test_padding_counts_neither_bits_nor_bytes(tiny_gpt2, tiny_tokenizer, test_blocks):
    ids = test_blocks[0]["input_ids"]
    real = 20
    longest = max(range(len(tiny_tokenizer)), key=lambda i: len(tiny_tokenizer.decode([i])))
    # Padding positions hold a long token on purpose: the attention mask, not the id, says they are not text.
    padded = Dataset.from_dict(
        {
            "input_ids": [ids[:real] + [longest] * (BLOCK_SIZE - real)],
            "attention_mask": [[1] * real + [0] * (BLOCK_SIZE - real)],
        }
    )
    cut = Dataset.from_dict({"input_ids": [ids[:real]]})
    padded_bpb, _, padded_tokens, padded_bytes = measured(tiny_gpt2, tiny_tokenizer, padded)
    cut_bpb, _, cut_tokens, cut_bytes = measured(tiny_gpt2, tiny_tokenizer, cut)
    assert (
        (padded_tokens, padded_bytes) == (cut_tokens, cut_bytes) == (real - 1, len(_text(tiny_tokenizer, ids[1:real])))
    )
    assert padded_bpb == pytest.approx(cut_bpb, rel=1e-5)


def test_special_tokens_stand_for_no_bytes(tiny_tokenizer):
    lengths = byte_lengths(tiny_tokenizer)
    assert all(lengths[i] == 0 for i in tiny_tokenizer.all_special_ids)
    # Every other token: the bytes the tokenizer's own decoder gives it, where they are whole characters.
    for token_id in range(len(tiny_tokenizer)):
        text = tiny_tokenizer.decode([token_id], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if "\ufffd" not in text:
            assert lengths[token_id] == len(text.encode("utf-8")), (token_id, text)


@pytest.mark.parametrize("block", [2, 3, 7, 16])
def test_bytes_add_up_exactly_when_blocks_cut_characters_in_two(tiny_tokenizer, block):
    # Multi-byte characters the tiny BPE splits into several byte tokens, so blocks end mid-character.
    text = "Naïve café — 日本語のテキスト, emoji 🎉🐍 and plain words, Ωμέγα. " * 3
    ids = tiny_tokenizer(text)["input_ids"]  # <s> ... </s>: the specials are 0 bytes
    # Blocks overlapping by one token: each block's first token is the one before's last, so every token but
    # the very first (<s>) is scored exactly once.
    rows = [ids[start : start + block] for start in range(0, len(ids) - 1, block - 1)]
    rows = [row + [tiny_tokenizer.pad_token_id] * (block - len(row)) for row in rows]
    masks = [[int(i < len(ids) - start) for i in range(block)] for start in range(0, len(ids) - 1, block - 1)]
    blocks = Dataset.from_dict({"input_ids": rows, "attention_mask": masks})
    assert scored_bytes(blocks, tiny_tokenizer, NextTokenCollator(), "clm") == len(text.encode("utf-8"))


def test_a_tokenizer_that_is_not_byte_level_decodes_each_block(monkeypatch, tiny_tokenizer, test_blocks):
    exact = scored_bytes(test_blocks, tiny_tokenizer, NextTokenCollator(), "clm")
    monkeypatch.setattr(bpb_module, "byte_lengths", lambda tokenizer: None)  # as for a SentencePiece tokenizer
    assert scored_bytes(test_blocks, tiny_tokenizer, NextTokenCollator(), "clm") == exact  # ASCII: no cut character


def test_a_masked_lm_has_no_bits_per_byte(tiny_tokenizer, test_blocks):
    with pytest.raises(ValueError, match="causal LM only"):
        scored_bytes(test_blocks, tiny_tokenizer, NextTokenCollator(), "mlm")


def test_no_text_at_all_is_infinite_bits_per_byte():
    assert bits_per_byte(2.0, 10, 0) == math.inf


# ---------------------------------------------------------------------------- the evaluate stage's metrics


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer, test_blocks, tiny_gpt2):
    """A blocks artifact and a saved causal and masked model, as evaluate reads them."""
    root = tmp_path_factory.mktemp("bpb")
    DatasetDict(train=test_blocks, test=test_blocks).save_to_disk(str(root / "blocks" / "dataset"))
    for objective, model in (
        ("clm", tiny_gpt2),
        ("mlm", build_base_model("mlm", TINY_MODEL, tiny_tokenizer, seed=0, block_size=BLOCK_SIZE)),
    ):
        model.save_pretrained(str(root / objective))
        tiny_tokenizer.save_pretrained(str(root / objective))
    return root


def test_evaluate_reports_bits_per_byte_beside_perplexity_for_the_causal_lm(saved, tiny_gpt2, tiny_tokenizer, caplog):
    config = load_config(overrides=TINY_OVERRIDES)
    with caplog.at_level("INFO"):
        metrics = evaluate_models("clm", saved / "clm", saved / "blocks", config)
    bpb, loss, tokens, nbytes = measured(tiny_gpt2, tiny_tokenizer, load_blocks(saved))
    assert metrics["eval_bytes"] == nbytes and metrics["eval_tokens"] == tokens
    assert metrics["bits_per_byte"] == pytest.approx(bpb, rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["eval_loss"] * tokens / math.log(2) / nbytes)
    assert metrics["base_bits_per_byte"] == pytest.approx(metrics["bits_per_byte"])  # the same model: train.seed=0
    assert model_bits_per_byte(tiny_gpt2, tiny_tokenizer, load_blocks(saved), config, "cpu") == pytest.approx(bpb)
    json.dumps(metrics)  # metrics.json
    assert f"bits per byte {metrics['bits_per_byte']:.4f}" in caplog.text


def test_a_masked_lms_metrics_have_no_bits_per_byte_keys(saved):
    metrics = evaluate_models("mlm", saved / "mlm", saved / "blocks", load_config(overrides=TINY_OVERRIDES))
    assert {"bits_per_byte", "base_bits_per_byte", "eval_bytes"}.isdisjoint(metrics)
    assert metrics.get("bits_per_byte") is None


def load_blocks(root) -> Dataset:
    from datasets import load_from_disk

    return load_from_disk(str(root / "blocks" / "dataset"))["test"]


def _text(tokenizer, ids) -> bytes:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).encode("utf-8")
