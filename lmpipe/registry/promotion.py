"""Champion/challenger gating: which alias a new model version gets, and why.

A new version takes `champion` only when its perplexity beats the current champion's by at
least `registry.champion_margin`, on the same evaluation set. When the champion was judged on
another set, it is re-evaluated on the new one first (or promotion is refused, by config);
numbers from different sets are never compared. Otherwise the version becomes `challenger`,
and the reason goes into its description.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmpipe.config.schema import RegistryConfig

CHAMPION, CHALLENGER = "champion", "challenger"
EVAL_SET_TAG, TOKENIZER_TAG = "eval.set", "tokenizer.hash"
ALIAS_TAG, REASON_TAG = "lmpipe.alias", "lmpipe.alias_reason"  # on each version: its alias, and why

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    version: int
    perplexity: float
    eval_set: str
    tokenizer_hash: str


@dataclass(frozen=True)
class Standing:
    """The current champion, measured on the candidate's evaluation set."""

    version: int
    perplexity: float
    own_set_perplexity: float | None = None  # its recorded number, when it was re-evaluated here


@dataclass(frozen=True)
class Decision:
    alias: str | None
    reason: str
    champion: Standing | None = None


def decide(candidate_perplexity: float, champion: Standing | None, margin: float) -> Decision:
    """Compare two perplexities from one evaluation set; lower is better."""
    if champion is None:
        return Decision(CHAMPION, "first version of this model: there was no champion yet")
    needed = champion.perplexity * (1 - margin)
    if candidate_perplexity < needed or not math.isfinite(champion.perplexity):
        gain = 1 - candidate_perplexity / champion.perplexity if math.isfinite(champion.perplexity) else 1.0
        return Decision(
            CHAMPION,
            f"perplexity {candidate_perplexity:.2f} beats champion v{champion.version}'s "
            f"{champion.perplexity:.2f} by {gain:.1%} (margin {margin:.1%})",
            champion,
        )
    return Decision(
        CHALLENGER,
        f"perplexity {candidate_perplexity:.2f} does not beat champion v{champion.version}'s "
        f"{champion.perplexity:.2f} by the required {margin:.1%} (it needed less than {needed:.2f})",
        champion,
    )


def current_champion(client: Any, name: str) -> Any | None:
    """The model version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
            return None
        raise  # a server error must fail (and retry) the task, never read as "no champion"


def recorded_perplexity(client: Any, version: Any) -> float:
    """The champion's perplexity on its own evaluation set, exact from its run, else from its tag."""
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return float(metrics.get("perplexity", version.tags.get("perplexity", "inf")))


def gate(
    client: Any,
    name: str,
    candidate: Candidate,
    registry: RegistryConfig,
    reevaluate: Callable[[int], float],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> Decision:
    """The alias for `candidate`. `reevaluate(version)` is the perplexity of that version on the candidate's set."""
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
    if holder.tags.get(TOKENIZER_TAG) != candidate.tokenizer_hash:
        return Decision(
            CHALLENGER,
            f"champion v{version} was evaluated on another evaluation set and reads another tokenizer (or records "
            "none), so it "
            "cannot be re-evaluated on this version's set and the perplexities are not comparable; not "
            "promoted: compare them by hand",
        )
    log.info(f"register: champion v{version} was evaluated on another set; re-evaluating it on {candidate.eval_set}")
    standing = Standing(version, reevaluate(version), own_set_perplexity=own)
    return decide(candidate.perplexity, standing, registry.champion_margin)
