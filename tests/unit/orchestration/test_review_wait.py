"""lmpipe.orchestration.review_wait: the review form's text and keys, and when a run refuses to wait."""

from __future__ import annotations

import re

from lmpipe.config.schema import PipelineConfig
from lmpipe.orchestration import temporary_server
from lmpipe.orchestration.preflight import unreachable_reviewer
from lmpipe.orchestration.review_wait import ReviewDecision, form_description, pause_key

REGISTRATION = {
    "model_name": "eli5-clm",
    "version": 3,
    "version_url": "http://mlflow:5000/#/models/eli5-clm/versions/3",
    "perplexity": 41.234,
    "base_perplexity": 2048.0,
    "alias_reason": "awaiting review (registry.approval=reviewer); the gate alone would have given champion: ...",
}
TAGS = {
    "champion.version": "2",
    "champion.perplexity": "45.0000",
    "review.gate_alias": "champion",
    "review.gate_reason": "perplexity 41.23 beats champion v2's 45.00 by 8.4% (margin 1.0%)",
}


def test_pause_keys_are_stable_per_version_and_valid_prefect_input_keys():
    assert pause_key("eli5-clm", 3) == pause_key("eli5-clm", 3)
    assert pause_key("eli5-clm", 3) != pause_key("eli5-clm", 4) != pause_key("eli5 clm", 3)
    assert re.fullmatch(r"[a-z0-9-]+", pause_key("Ünïcode name with spaces", 12))


def test_the_form_shows_the_link_the_numbers_and_the_gates_verdict():
    text = form_description(REGISTRATION, TAGS)
    assert "[eli5-clm v3](http://mlflow:5000/#/models/eli5-clm/versions/3)" in text
    assert "perplexity **41.23** (base model 2048.00)" in text
    assert "Champion v2: perplexity 45.0000" in text
    assert "The gate alone would have given **champion**: perplexity 41.23 beats champion v2's 45.00" in text


def test_the_form_has_two_choices_and_a_note():
    schema = ReviewDecision.model_json_schema()
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    assert schema["required"] == ["decision"]
    assert ReviewDecision(decision="reject").note == ""


def test_reviewer_approval_on_a_private_temporary_server_is_refused_up_front(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = "http://127.0.0.1:1/api"
    monkeypatch.setattr(temporary_server, "_SERVING_THIS_PROCESS_ALONE", {url})
    reviewer = PipelineConfig.model_validate({"registry": {"approval": "reviewer"}})
    with temporary_settings(updates={PREFECT_API_URL: url}):
        assert "registry.approval='reviewer'" in unreachable_reviewer(reviewer)
        assert unreachable_reviewer(PipelineConfig()) is None  # automatic never waits
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.example:4200/api"}):
        assert unreachable_reviewer(reviewer) is None
