"""lmpipe.registry.promotion.decide: the champion/challenger rule on numbers from one evaluation set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmpipe.registry.promotion import CHALLENGER, CHAMPION, Standing, decide


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
