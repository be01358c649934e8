"""Champion/challenger gating: which alias a new model version gets, and why.

A new version takes `champion` only when it beats the current champion by at least
`registry.champion_margin` (relative), on one evaluation text. Which number is compared:

- the champion was evaluated on the same set: perplexity, as both recorded it;
- on another set, with the same tokenizer: perplexity, after the champion is re-evaluated on this
  version's set (or promotion is refused: registry.on_other_eval_set=refuse);
- on another set, with another tokenizer (a causal LM): bits per byte, the champion's measured on
  the text of this version's test blocks, re-tokenized with its own tokenizer
  (lmpipe.evaluation.other_tokenizer). Perplexities per token of different vocabularies do not
  compare; the loss per byte of one text does;
- a masked LM with another tokenizer: nothing, and the version stays challenger (see
  MLM_ACROSS_TOKENIZERS).

Numbers from different sets are never compared. When the version is not promoted it becomes
`challenger`, and the reason goes into its description.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lmpipe.config.schema import RegistryConfig
from lmpipe.objectives import Objective, spec_of

CHAMPION, CHALLENGER = "champion", "challenger"
EVAL_SET_TAG, TOKENIZER_TAG = "eval.set", "tokenizer.hash"
ALIAS_TAG, REASON_TAG = "lmpipe.alias", "lmpipe.alias_reason"  # on each version: its alias, and why
METRIC_TAG = "champion.metric"  # on each version compared with a champion: which number was compared

Metric = Literal["perplexity", "bits_per_byte"]
PERPLEXITY, BITS_PER_BYTE = "perplexity", "bits_per_byte"
_WORDS: dict[str, str] = {PERPLEXITY: "perplexity", BITS_PER_BYTE: "bits per byte"}
_DECIMALS: dict[str, int] = {PERPLEXITY: 2, BITS_PER_BYTE: 3}  # 1% of a bits per byte near 2 is 0.02

MLM_ACROSS_TOKENIZERS = (
    "a masked LM's pseudo-perplexity has no per-byte form that compares across tokenizers: it scores only "
    "the tokens its masks hide, and under two tokenizers those are different pieces of the text (a whole "
    "word under one, a fragment of it under the other, with the rest of the word as a clue), so the two "
    "numbers measure different tasks"
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    version: int
    perplexity: float
    eval_set: str
    tokenizer_hash: str
    objective: Objective = "clm"
    bits_per_byte: float | None = None  # metrics.json's; None for a masked LM


@dataclass(frozen=True)
class Standing:
    """The current champion, measured on the candidate's evaluation text, in `metric` (lower is better)."""

    version: int
    value: float
    own_set_value: float | None = None  # its recorded number, when it was re-evaluated here (None: not recorded)
    metric: Metric = PERPLEXITY
    reevaluated: bool = False  # measured here by the gate, not read from its registration


@dataclass(frozen=True)
class Decision:
    alias: str | None
    reason: str
    champion: Standing | None = None

    @property
    def metric(self) -> Metric | None:
        """The number compared with the champion's; None when nothing was compared."""
        return self.champion.metric if self.champion is not None else None


def format_value(value: float, metric: Metric) -> str:
    return f"{value:,.{_DECIMALS[metric]}f}"


def decide(candidate_value: float, champion: Standing | None, margin: float, why: str = "") -> Decision:
    """Compare two numbers of `champion.metric` from one evaluation text; lower is better. `why` ends the reason."""
    if champion is None:
        return Decision(CHAMPION, "first version of this model: there was no champion yet")
    metric, words = champion.metric, _WORDS[champion.metric]
    ours, theirs = format_value(candidate_value, metric), format_value(champion.value, metric)
    needed = champion.value * (1 - margin)
    if candidate_value < needed or not math.isfinite(champion.value):
        gain = 1 - candidate_value / champion.value if math.isfinite(champion.value) else 1.0
        reason = f"{words} {ours} beats champion v{champion.version}'s {theirs} by {gain:.1%} (margin {margin:.1%})"
        return Decision(CHAMPION, reason + why, champion)
    reason = (
        f"{words} {ours} does not beat champion v{champion.version}'s {theirs} by the required {margin:.1%} "
        f"(it needed less than {format_value(needed, metric)})"
    )
    return Decision(CHALLENGER, reason + why, champion)


def comparison_tags(decision: Decision) -> dict[str, str]:
    """What the version records about the champion it was compared with; empty when none was."""
    champion = decision.champion
    if champion is None:
        return {}
    return {
        "champion.version": str(champion.version),
        f"champion.{champion.metric}": f"{champion.value:.4f}",
        "champion.reevaluated": str(champion.reevaluated).lower(),
        METRIC_TAG: champion.metric,
    }


def current_champion(client: Any, name: str) -> Any | None:
    """The model version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise  # a server error must fail (and retry) the task, never read as "no champion"


def recorded_metric(client: Any, version: Any, metric: Metric = PERPLEXITY) -> float | None:
    """The champion's number on its own evaluation set, exact from its run, else from its tag; None if neither."""
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    value = metrics.get(metric, version.tags.get(metric))
    return None if value is None else float(value)


def recorded_perplexity(client: Any, version: Any) -> float:
    value = recorded_metric(client, version, PERPLEXITY)
    return float("inf") if value is None else value


def gate(
    client: Any,
    name: str,
    candidate: Candidate,
    registry: RegistryConfig,
    reevaluate: Callable[[int, Metric], float],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> Decision:
    """The alias for `candidate`. `reevaluate(version, metric)` measures that version on the candidate's
    evaluation text: its perplexity on the candidate's set, or its bits per byte on the set's text."""
    if not registry.promote:
        return Decision(None, "promotion is off (registry.promote=false): registered without an alias")
    holder = current_champion(client, name)
    if holder is None:
        return decide(candidate.perplexity, None, registry.champion_margin)
    version = int(holder.version)
    if version == candidate.version:  # a retry that already got this far
        return Decision(CHAMPION, holder.tags.get(REASON_TAG, "already the champion"))
    own = recorded_perplexity(client, holder)
    champion_set = holder.tags.get(EVAL_SET_TAG)
    if champion_set == candidate.eval_set:
        return decide(candidate.perplexity, Standing(version, own), registry.champion_margin)
    if registry.on_other_eval_set == "refuse":
        return Decision(
            CHALLENGER,
            f"champion v{version} was evaluated on another evaluation set ({champion_set}, this version on "
            f"{candidate.eval_set}); numbers from different sets are never compared, and "
            "registry.on_other_eval_set=refuse, so this version is not promoted: compare them by hand",
        )
    if holder.tags.get(TOKENIZER_TAG) == candidate.tokenizer_hash:
        log.info(
            f"register: champion v{version} was evaluated on another set; re-evaluating it on {candidate.eval_set}"
        )
        standing = Standing(version, reevaluate(version, PERPLEXITY), own_set_value=own, reevaluated=True)
        return decide(candidate.perplexity, standing, registry.champion_margin)
    other = f"champion v{version} reads a different tokenizer from this version's (or records none)"
    if spec_of(candidate.objective).masked:
        return Decision(
            CHALLENGER,
            f"{other}, so its perplexity is over other tokens and it cannot be re-evaluated on this version's "
            f"masked blocks; {MLM_ACROSS_TOKENIZERS}. Not promoted: compare them by hand",
        )
    if candidate.bits_per_byte is None:  # metrics from before bits per byte were measured
        return Decision(
            CHALLENGER,
            f"{other}, and this version's evaluation recorded no bits per byte to compare across tokenizers; "
            "not promoted: evaluate it again, or compare them by hand",
        )
    log.info(
        f"register: champion v{version} reads another tokenizer; measuring its bits per byte on the text of "
        f"this version's evaluation set {candidate.eval_set}"
    )
    own_bpb = recorded_metric(client, holder, BITS_PER_BYTE)
    standing = Standing(
        version, reevaluate(version, BITS_PER_BYTE), own_set_value=own_bpb, metric=BITS_PER_BYTE, reevaluated=True
    )
    why = (
        ", on the text of this version's evaluation set re-tokenized for the champion; compared by bits per byte "
        "because the two read different tokenizers, so their perplexities are per different tokens"
    )
    return decide(candidate.bits_per_byte, standing, registry.champion_margin, why)
