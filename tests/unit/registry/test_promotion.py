"""lmpipe.registry.promotion: the champion/challenger rule on numbers from one evaluation text, and the gate that
picks which number (perplexity, or bits per byte across tokenizers) and measures the champion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from lmpipe.config.schema import RegistryConfig
from lmpipe.registry.promotion import (
    BITS_PER_BYTE,
    CHALLENGER,
    CHAMPION,
    EVAL_SET_TAG,
    PERPLEXITY,
    TOKENIZER_TAG,
    Candidate,
    Standing,
    comparison_tags,
    decide,
    gate,
)


def test_the_first_version_becomes_champion():
    decision = decide(500.0, None, 0.01)
    assert decision.alias == CHAMPION and "no champion yet" in decision.reason and decision.champion is None


def test_a_model_better_by_more_than_the_margin_takes_champion():
    decision = decide(90.0, Standing(3, 100.0), 0.05)
    assert decision.alias == CHAMPION
    assert decision.reason == "perplexity 90.00 beats champion v3's 100.00 by 10.0% (margin 5.0%)"
    assert decision.champion == Standing(3, 100.0)


def test_a_model_better_by_less_than_the_margin_stays_challenger():
    decision = decide(96.0, Standing(3, 100.0), 0.05)
    assert decision.alias == CHALLENGER
    assert "does not beat champion v3's 100.00 by the required 5.0% (it needed less than 95.00)" in decision.reason


@pytest.mark.parametrize("candidate", [100.0, 120.0])
def test_an_equal_or_worse_model_is_challenger_even_with_no_margin(candidate):
    assert decide(candidate, Standing(1, 100.0), 0.0).alias == CHALLENGER


def test_any_finite_perplexity_beats_an_infinite_champion():
    assert decide(1e6, Standing(1, float("inf")), 0.01).alias == CHAMPION


@given(
    champion=st.floats(1.0, 1e5),
    candidate=st.floats(1.0, 1e5),
    margin=st.floats(0.0, 0.5),
)
def test_champion_exactly_when_below_the_margin_line(champion, candidate, margin):
    decision = decide(candidate, Standing(1, champion), margin)
    assert (decision.alias == CHAMPION) == (candidate < champion * (1 - margin))


# ---------------------------------------------------------------------------- the gate: which number is compared


class FakeClient:
    """The two registry reads the gate makes: the champion alias, and the champion's run metrics."""

    def __init__(self, champion: SimpleNamespace | None, run_metrics: dict[str, float] | None = None) -> None:
        self.champion, self.run_metrics = champion, run_metrics or {}

    def get_model_version_by_alias(self, name: str, alias: str):
        if self.champion is None:
            raise MlflowException("alias not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.champion

    def get_run(self, run_id: str):
        return SimpleNamespace(data=SimpleNamespace(metrics=self.run_metrics))


def champion_version(eval_set="set-A", tokenizer="tok-A", **tags) -> SimpleNamespace:
    return SimpleNamespace(version="3", run_id="run3", tags={EVAL_SET_TAG: eval_set, TOKENIZER_TAG: tokenizer, **tags})


class Reevaluation:
    """The gate's `reevaluate`, recording what it was asked for."""

    def __init__(self, **values: float) -> None:
        self.values, self.calls = values, []

    def __call__(self, version: int, metric: str) -> float:
        self.calls.append((version, metric))
        return self.values[metric]


CANDIDATE = Candidate(7, 90.0, "set-B", "tok-B", "clm", bits_per_byte=2.0)


def run_gate(candidate=CANDIDATE, champion=None, run_metrics=None, reevaluate=None, **registry):
    reevaluate = reevaluate or Reevaluation(perplexity=100.0, bits_per_byte=2.5)
    client = FakeClient(champion, run_metrics if run_metrics is not None else {"perplexity": 80.0})
    return gate(client, "m", candidate, RegistryConfig(**registry), reevaluate), reevaluate


def test_the_same_eval_set_compares_the_recorded_perplexities():
    decision, reevaluate = run_gate(champion=champion_version(eval_set="set-B", tokenizer="tok-B"))
    assert reevaluate.calls == []
    assert decision.champion == Standing(3, 80.0) and decision.metric == PERPLEXITY
    assert decision.alias == CHALLENGER and decision.reason.startswith("perplexity 90.00 does not beat")
    assert comparison_tags(decision) == {
        "champion.version": "3",
        "champion.perplexity": "80.0000",
        "champion.reevaluated": "false",
        "champion.metric": "perplexity",
    }


def test_another_set_with_the_same_tokenizer_reevaluates_the_champions_perplexity():
    decision, reevaluate = run_gate(champion=champion_version(tokenizer="tok-B"))
    assert reevaluate.calls == [(3, PERPLEXITY)]
    assert decision.champion == Standing(3, 100.0, own_set_value=80.0, reevaluated=True)
    assert decision.alias == CHAMPION and decision.reason.startswith("perplexity 90.00 beats champion v3's 100.00")
    assert comparison_tags(decision)["champion.reevaluated"] == "true"


def test_another_tokenizer_compares_bits_per_byte_on_this_versions_text():
    champion = champion_version(bits_per_byte="2.6000")  # no run metric: its tag is read
    decision, reevaluate = run_gate(champion=champion)
    assert reevaluate.calls == [(3, BITS_PER_BYTE)]
    assert decision.champion == Standing(3, 2.5, own_set_value=2.6, metric=BITS_PER_BYTE, reevaluated=True)
    assert decision.alias == CHAMPION
    assert decision.reason.startswith("bits per byte 2.000 beats champion v3's 2.500 by 20.0% (margin 1.0%)")
    assert "compared by bits per byte because the two read different tokenizers" in decision.reason
    assert comparison_tags(decision) == {
        "champion.version": "3",
        "champion.bits_per_byte": "2.5000",
        "champion.reevaluated": "true",
        "champion.metric": "bits_per_byte",
    }


def test_bits_per_byte_within_the_margin_stays_challenger_even_when_perplexity_looks_far_better():
    candidate = Candidate(7, 10.0, "set-B", "tok-B", "clm", bits_per_byte=2.49)  # perplexity per other tokens
    decision, _ = run_gate(candidate, champion_version(), reevaluate=Reevaluation(perplexity=500.0, bits_per_byte=2.5))
    assert decision.alias == CHALLENGER and decision.metric == BITS_PER_BYTE
    assert "does not beat champion v3's 2.500 by the required 1.0% (it needed less than 2.475)" in decision.reason


def test_a_champion_recording_no_tokenizer_is_compared_by_bits_per_byte():
    decision, reevaluate = run_gate(champion=champion_version(tokenizer=None))
    assert reevaluate.calls == [(3, BITS_PER_BYTE)] and decision.champion.own_set_value is None


def test_a_masked_lm_with_another_tokenizer_is_not_compared_and_says_why():
    candidate = Candidate(7, 90.0, "set-B", "tok-B", "mlm")
    decision, reevaluate = run_gate(candidate, champion_version())
    assert reevaluate.calls == [] and decision.champion is None and comparison_tags(decision) == {}
    assert decision.alias == CHALLENGER
    assert "pseudo-perplexity has no per-byte form that compares across tokenizers" in decision.reason
    assert "different pieces of the text" in decision.reason and "compare them by hand" in decision.reason


def test_a_causal_lm_without_bits_per_byte_is_not_compared_across_tokenizers():
    candidate = Candidate(7, 90.0, "set-B", "tok-B", "clm", bits_per_byte=None)
    decision, reevaluate = run_gate(candidate, champion_version())
    assert reevaluate.calls == [] and decision.alias == CHALLENGER and "recorded no bits per byte" in decision.reason


@pytest.mark.parametrize("tokenizer", ["tok-A", "tok-B"])
def test_refuse_mode_still_refuses_whatever_the_tokenizers(tokenizer):
    decision, reevaluate = run_gate(champion=champion_version(tokenizer=tokenizer), on_other_eval_set="refuse")
    assert reevaluate.calls == [] and decision.alias == CHALLENGER and decision.champion is None
    assert "registry.on_other_eval_set=refuse" in decision.reason


def test_no_champion_and_promotion_off():
    assert run_gate()[0].alias == CHAMPION
    assert run_gate(champion=champion_version(), promote=False)[0].alias is None
