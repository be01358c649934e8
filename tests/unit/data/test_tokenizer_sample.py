"""lmpipe.data.tokenizer_sample: the trained BPE's deterministic sample of the train split, and its budget knob."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmpipe.config.loading import load_config
from lmpipe.config.schema import TrainSample
from lmpipe.data.tokenizer_choice import tokenizer_identity
from lmpipe.data.tokenizer_sample import SampleTally, SplitSize, sampled_texts, split_size
from lmpipe.data.tokenizers import build_tokenizer
from lmpipe.errors import ConfigError

# 2,000 distinct rows of 20-29 bytes each: ~49 kB.
CORPUS = [f"row {i:05d} says {'x' * (i % 10)}" for i in range(2000)]
CORPUS_SIZE = SplitSize(rows=len(CORPUS), text_bytes=sum(len(text.encode()) for text in CORPUS))


def in_batches(texts: list[str], rows: int) -> list[list[str]]:
    return [texts[i : i + rows] for i in range(0, len(texts), rows)]


def sample(
    budget: TrainSample, batch_rows: int = 100, size: SplitSize = CORPUS_SIZE, seed: int = 42
) -> tuple[list[str], SampleTally]:
    tally = SampleTally()
    kept = [
        text for batch in sampled_texts(in_batches(CORPUS, batch_rows), size, budget, seed, tally) for text in batch
    ]
    return kept, tally


# ---------------------------------------------------------------------------- the sample


def test_the_same_input_gives_the_same_sample():
    budget = TrainSample(bytes=10_000)
    assert sample(budget) == sample(budget)


@settings(max_examples=25, deadline=None)
@given(batch_rows=st.integers(1, 2500))
def test_the_sample_ignores_batch_boundaries(batch_rows):
    budget = TrainSample(bytes=10_000)
    assert sample(budget, batch_rows)[0] == sample(budget, 100)[0]


def test_another_seed_draws_another_sample():
    budget = TrainSample(bytes=10_000)
    assert sample(budget, seed=1)[0] != sample(budget, seed=2)[0]


def test_the_byte_budget_holds_within_one_row():
    kept, tally = sample(TrainSample(bytes=10_000))
    longest = max(len(text.encode()) for text in CORPUS)
    assert tally.bytes == sum(len(text.encode()) for text in kept)
    assert 10_000 * 0.8 <= tally.bytes < 10_000 + longest  # filled near the end of the split, never past one row


def test_the_row_budget_holds():
    kept, tally = sample(TrainSample(bytes=None, rows=300))
    assert tally.rows == len(kept)
    assert 300 * 0.8 <= len(kept) <= 300


def test_the_tighter_budget_wins():
    _, by_rows = sample(TrainSample(bytes=40_000, rows=100))
    _, by_bytes = sample(TrainSample(bytes=2_000, rows=1_500))
    assert by_rows.rows <= 100
    assert by_bytes.bytes < 2_000 + 30


def test_a_split_under_budget_comes_back_whole_and_in_its_batches():
    batches = in_batches(CORPUS, 100)
    tally = SampleTally()
    budget = TrainSample(bytes=CORPUS_SIZE.text_bytes + 1, rows=len(CORPUS))
    assert list(sampled_texts(batches, CORPUS_SIZE, budget, 42, tally)) == batches
    assert (tally.rows, tally.bytes) == (len(CORPUS), CORPUS_SIZE.text_bytes)


def test_no_budget_is_the_whole_split():
    assert sample(TrainSample(bytes=None, rows=None))[0] == CORPUS


def test_the_sample_spreads_over_the_whole_split():
    kept, _ = sample(TrainSample(bytes=10_000))  # about a fifth of the rows
    positions = sorted(CORPUS.index(text) for text in kept)
    quarters = [sum(1 for p in positions if q * 500 <= p < (q + 1) * 500) for q in range(4)]
    assert min(quarters) > 0.6 * len(kept) / 4, quarters


def test_repeated_rows_are_sampled_like_any_other_row():
    # A hash of the text would keep every copy of a row or none: a few distinct documents for the BPE.
    repeated = [f"document {i}" for i in range(10)] * 200
    size = SplitSize(rows=len(repeated), text_bytes=sum(len(text.encode()) for text in repeated))
    kept = [
        text for batch in sampled_texts([repeated], size, TrainSample(rows=200), 42, SampleTally()) for text in batch
    ]
    assert set(kept) == set(repeated) and len(kept) <= 200


def test_without_the_split_size_the_budget_still_stops_the_sample():
    # An older flatten report counted no bytes: every row is kept until the budget is spent.
    kept, tally = sample(TrainSample(bytes=1_000), size=SplitSize(rows=len(CORPUS)))
    assert kept == CORPUS[: len(kept)]
    assert 1_000 <= tally.bytes < 1_000 + 30


def test_split_size_reads_the_flatten_report_tolerantly(tmp_path):
    report = tmp_path / "flatten_report.json"
    assert split_size(report, "train") == SplitSize()  # no report
    report.write_text(json.dumps({"train": {"rows": 10, "dropped_empty_rows": 0}}))
    assert split_size(report, "train") == SplitSize(rows=10)
    report.write_text(json.dumps({"train": {"rows": 10, "dropped_empty_rows": 0, "text_bytes": 999}}))
    assert split_size(report, "train") == SplitSize(rows=10, text_bytes=999)
    report.write_text("not json")
    assert split_size(report, "train") == SplitSize()


# ---------------------------------------------------------------------------- the tokenizer trained on it


def trained_on_sample(sample_texts: list[str], record_dir, budget_bytes: int | None) -> str:
    config = load_config(None, ["tokenizer.vocab_size=300", f"tokenizer.train_sample.bytes={budget_bytes}"])
    report = record_dir / "flatten_report.json"
    text_bytes = sum(len(text.encode()) for text in sample_texts)
    report.write_text(json.dumps({"train": {"rows": len(sample_texts), "text_bytes": text_bytes}}))
    tokenizer = build_tokenizer(config, "clm", in_batches(sample_texts, 64), report, record_dir)
    return tokenizer.backend_tokenizer.to_str()


def test_the_same_sample_trains_the_same_tokenizer_twice(sample_texts, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    budget = sum(len(text.encode()) for text in sample_texts) // 3
    assert trained_on_sample(sample_texts, first, budget) == trained_on_sample(sample_texts, second, budget)
    record = json.loads((first / "tokenizer_sample.json").read_text())
    # p = budget / size: the sample lands near the budget, a little short of it or one row past it.
    assert record["rows"] < len(sample_texts) and budget * 0.8 <= record["bytes"] <= budget * 1.1
    assert record["seconds"] >= 0


def test_a_split_under_budget_trains_the_tokenizer_of_the_whole_split(sample_texts, tmp_path):
    from lmpipe.data.tokenizers import train_bpe_tokenizer

    whole = train_bpe_tokenizer(in_batches(sample_texts, 64), 300, 2).backend_tokenizer.to_str()
    assert trained_on_sample(sample_texts, tmp_path, 10**9) == whole


# ---------------------------------------------------------------------------- the knob


def test_the_budget_is_set_on_the_command_line():
    config = load_config(None, ["tokenizer.train_sample.bytes=50000000", "tokenizer.train_sample.rows=1000"])
    assert config.tokenizer.train_sample == TrainSample(bytes=50_000_000, rows=1000)
    assert load_config(None, ["tokenizer.train_sample.bytes=null"]).tokenizer.train_sample.bytes is None


def test_the_budget_is_in_the_trained_tokenizers_key_only():
    def identity(*overrides: str) -> dict:
        return tokenizer_identity(load_config(None, list(overrides)), "clm")

    assert identity("tokenizer.train_sample.bytes=1000") != identity()
    assert identity("tokenizer.train_sample.rows=1000") != identity()
    pretrained = "tokenizer.pretrained=distilgpt2"
    assert identity(pretrained, "tokenizer.train_sample.bytes=1000") == identity(pretrained)


@pytest.mark.parametrize("override", ["tokenizer.train_sample.bytes=0", "tokenizer.train_sample.megabytes=5"])
def test_a_bad_budget_fails_at_load_time_naming_the_field(override):
    with pytest.raises(ConfigError, match="tokenizer.train_sample"):
        load_config(None, [override])
