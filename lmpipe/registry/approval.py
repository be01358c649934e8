"""A person approves champion (registry.approval=reviewer): what the registry records, before and after.

register gives each new version 'challenger' and tags it `review.status=awaiting`, with the alias the
automatic gate would have given and why; the card's first line says it awaits review, with the gate's
numbers. The flow run then waits for a decision (lmpipe.orchestration.review_wait), and
record_decision applies it:
- approve moves 'champion' to the version (whatever the gate said: the person decides);
- reject leaves the aliases as they were;
- either way the version gets `review.decision`, `review.note` and `review.at`, and the card's first
  line records the decision.
Nobody deciding within registry.review_timeout leaves the version 'challenger', marked `timed-out`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from lmpipe.registry.promotion import ALIAS_TAG, CHALLENGER, CHAMPION, REASON_TAG, Decision

STATUS_TAG = "review.status"  # awaiting | approved | rejected | timed-out
DECISION_TAG, NOTE_TAG, AT_TAG = "review.decision", "review.note", "review.at"
GATE_ALIAS_TAG = "review.gate_alias"  # the alias the automatic gate would have given
GATE_REASON_TAG = "review.gate_reason"  # and why
REVIEW_RUN_TAG = "review.flow_run_id"  # the flow run that waits for the reviewer
AWAITING, TIMED_OUT = "awaiting", "timed-out"
STATUS_OF = {"approve": "approved", "reject": "rejected"}
CARD_FILE = "model_card.md"
NOTE_LIMIT = 5000  # MLflow keeps at most 5000 characters of a tag value

Verdict = Literal["approve", "reject"]

_log = logging.getLogger(__name__)


def held_for_review(decision: Decision) -> Decision:
    """The gate's decision as registry.approval=reviewer turns it: 'challenger', until a person decides."""
    would = decision.alias or "no alias"
    return dataclasses.replace(
        decision,
        alias=CHALLENGER,
        reason=f"awaiting review (registry.approval=reviewer); the gate alone would have given {would}: "
        f"{decision.reason}",
    )


def review_tags(gate_decision: Decision, flow_run_id: str | None) -> dict[str, str]:
    """The tags a version held for review is registered with: the flow run that completes its registration is
    the one that waits for the reviewer (lmpipe.orchestration.review_wait reads review.flow_run_id)."""
    return {
        STATUS_TAG: AWAITING,
        GATE_ALIAS_TAG: gate_decision.alias or "none",
        GATE_REASON_TAG: gate_decision.reason[:NOTE_LIMIT],
        REVIEW_RUN_TAG: flow_run_id or "",
    }


def card_heading(name: str, version: int, status: str, note: str = "", at: str = "") -> str:
    """The card's first line: where the version stands in review."""
    if status == AWAITING:
        return f"# {name} v{version}: awaiting review"
    if status == TIMED_OUT:
        return f"# {name} v{version}: not reviewed (nobody decided in time; it stays {CHALLENGER})"
    said = f": {one_line(note)}" if note else ""
    return f"# {name} v{version}: {status} by a reviewer on {at}{said}"


def with_heading(card: str, heading: str) -> str:
    """The card with its first line (the `# name vN...` title) replaced."""
    _, _, rest = card.partition("\n")
    return f"{heading}\n{rest}"


def one_line(text: str) -> str:
    return " ".join(text.split())


def review_status(version: Any) -> str | None:
    return version.tags.get(STATUS_TAG)


def record_decision(
    client: Any,
    name: str,
    version: int,
    verdict: Verdict,
    note: str,
    log: logging.Logger | logging.LoggerAdapter = _log,
    at: datetime | None = None,
) -> str:
    """Apply a reviewer's decision to `version`; returns its review status. Safe to repeat (a retried or resumed
    flow run): a version already decided keeps its first decision."""
    current = client.get_model_version(name, str(version))
    status = review_status(current)
    if status in STATUS_OF.values():
        log.info(f"review: {name} v{version} was already {status}; keeping that decision")
        return status
    status = STATUS_OF[verdict]
    when = (at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    note = one_line(note)[:NOTE_LIMIT]
    if verdict == "approve":
        held_as_challenger = str(client.get_registered_model(name).aliases.get(CHALLENGER)) == str(version)
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if held_as_challenger:  # one version, one role: it no longer waits as the challenger
            client.delete_registered_model_alias(name, CHALLENGER)
        client.set_model_version_tag(name, str(version), ALIAS_TAG, CHAMPION)
        client.set_model_version_tag(name, str(version), REASON_TAG, f"approved by a reviewer: {note or 'no note'}")
    for key, value in {DECISION_TAG: verdict, NOTE_TAG: note, AT_TAG: when}.items():
        client.set_model_version_tag(name, str(version), key, value)
    rewrite_card(client, current, card_heading(name, version, status, note, when))
    client.set_model_version_tag(name, str(version), STATUS_TAG, status)  # last: the decision is complete
    log.info(
        f"review: {name} v{version} {status}"
        + (f"; champion is now v{version}" if verdict == "approve" else "; aliases unchanged")
        + (f" ({note})" if note else "")
    )
    return status


def record_timeout(client: Any, name: str, version: int, log: logging.Logger | logging.LoggerAdapter = _log) -> None:
    """Nobody decided: the version stays 'challenger', and its tag and card say so."""
    current = client.get_model_version(name, str(version))
    if review_status(current) != AWAITING:
        return
    rewrite_card(client, current, card_heading(name, version, TIMED_OUT))
    client.set_model_version_tag(name, str(version), STATUS_TAG, TIMED_OUT)
    log.warning(f"review: nobody decided on {name} v{version}; it stays {CHALLENGER}")


def rewrite_card(client: Any, version: Any, heading: str) -> None:
    """The version's description and its run's model_card.md, with the review line as their first line."""
    client.update_model_version(
        version.name, version.version, description=with_heading(version.description or "", heading)
    )
    if version.run_id:
        with tempfile.TemporaryDirectory(prefix="lmpipe-card-") as scratch:
            card = Path(client.download_artifacts(version.run_id, CARD_FILE, scratch)).read_text()
        client.log_text(version.run_id, with_heading(card, heading), CARD_FILE)
