"""lmpipe.registry.approval: what the registry records for a version held for review, and after the decision.

The client here is an in-memory stand-in recording the calls the real MlflowClient would get; the
real server is exercised in tests/integration/test_reviewer_approval.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from lmpipe.registry.approval import (
    AWAITING,
    card_heading,
    held_for_review,
    record_decision,
    record_timeout,
    review_tags,
    with_heading,
)
from lmpipe.registry.promotion import CHALLENGER, CHAMPION, Decision

CARD = "# m v2\n\n**Alias: challenger.** awaiting review.\n\n## Purpose\n"


class Registry:
    """One model version with tags, a description, aliases and a run artifact."""

    def __init__(self, status: str = AWAITING) -> None:
        self.tags = {"review.status": status, "lmpipe.alias": CHALLENGER}
        self.description = CARD
        self.aliases = {"champion": "1", "challenger": "2"}
        self.artifacts = {"model_card.md": CARD}

    def get_model_version(self, name, version):
        return SimpleNamespace(
            name=name, version=version, tags=dict(self.tags), description=self.description, run_id="r"
        )

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version

    def delete_registered_model_alias(self, name, alias):
        del self.aliases[alias]

    def get_registered_model(self, name):
        return SimpleNamespace(aliases={alias: int(version) for alias, version in self.aliases.items()})

    def set_model_version_tag(self, name, version, key, value):
        self.tags[key] = value

    def update_model_version(self, name, version, description):
        self.description = description

    def download_artifacts(self, run_id, path, dst):
        (Path(dst) / path).write_text(self.artifacts[path])
        return str(Path(dst) / path)

    def log_text(self, run_id, text, path):
        self.artifacts[path] = text


AT = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def test_held_for_review_is_challenger_and_keeps_the_gates_reason_and_numbers():
    gate = Decision(CHAMPION, "perplexity 90.00 beats champion v1's 100.00 by 10.0% (margin 1.0%)")
    held = held_for_review(gate)
    assert held.alias == CHALLENGER
    assert held.reason.startswith(
        "awaiting review (registry.approval=reviewer); the gate alone would have given champion"
    )
    assert "90.00 beats champion v1's 100.00" in held.reason
    assert review_tags(gate, "run-1") == {
        "review.status": "awaiting",
        "review.gate_alias": "champion",
        "review.gate_reason": gate.reason,
        "review.flow_run_id": "run-1",
    }


def test_the_heading_replaces_only_the_first_line():
    assert with_heading(CARD, card_heading("m", 2, AWAITING)) == CARD.replace("# m v2\n", "# m v2: awaiting review\n")
    assert card_heading("m", 2, "approved", "fine\nreally", "2026-12-07") == (
        "# m v2: approved by a reviewer on 2026-12-07: fine really"
    )


def test_approve_moves_champion_and_tags_the_decision_last_status():
    registry = Registry()
    assert record_decision(registry, "m", 2, "approve", "reads well", at=AT) == "approved"
    assert registry.aliases == {"champion": "2"}  # no longer the challenger too
    assert registry.tags["review.decision"] == "approve" and registry.tags["review.note"] == "reads well"
    assert registry.tags["review.at"] == "2026-12-07T12:00:00+00:00" and registry.tags["review.status"] == "approved"
    assert registry.tags["lmpipe.alias"] == CHAMPION
    heading = "# m v2: approved by a reviewer on 2026-12-07T12:00:00+00:00: reads well"
    assert registry.description.splitlines()[0] == heading
    assert registry.artifacts["model_card.md"].splitlines()[0] == heading


def test_reject_leaves_the_aliases_as_they_were():
    registry = Registry()
    assert record_decision(registry, "m", 2, "reject", "", at=AT) == "rejected"
    assert registry.aliases == {"champion": "1", "challenger": "2"}
    assert registry.tags["review.decision"] == "reject" and registry.tags["lmpipe.alias"] == CHALLENGER


def test_a_decided_version_keeps_its_first_decision():
    registry = Registry(status="rejected")
    assert record_decision(registry, "m", 2, "approve", "changed my mind", at=AT) == "rejected"
    assert registry.aliases["champion"] == "1" and "review.decision" not in registry.tags


def test_timeout_marks_the_version_not_reviewed_and_moves_nothing():
    registry = Registry()
    record_timeout(registry, "m", 2)
    assert registry.tags["review.status"] == "timed-out" and registry.aliases["champion"] == "1"
    assert "not reviewed" in registry.description.splitlines()[0]
