"""registry.approval=reviewer on a real (temporary) Prefect server and a real MLflow store.

Flow runs started here (no deployment) are *paused* in their process; the reviewer answers from
another thread with the real `lmpipe review` command, as a person at a terminal would. (The
suspended, worker-freeing path of deployment runs and the Prefect UI's form are proven in
tests/e2e/test_review_in_the_ui.py.) One history per module, built in order:

    v1  automatic, 8 steps          -> champion
    v2  reviewer, 40 steps, approve -> champion (the reviewer said so)
    v3  reviewer, 2 steps, reject   -> challenger; champion stays v2
    v4  reviewer, nobody decides    -> challenger, not reviewed; the run ends Completed saying so
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from mlflow import MlflowClient
from pipeline_probe import tiny_config
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flows.clm import clm_flow
from lmpipe.orchestration.review_wait import AWAITING_REVIEW_TAG, pause_key
from lmpipe.registry.approval import STATUS_TAG

pytestmark = pytest.mark.integration

NAME = "review-clm"
REVIEWER = ("registry.approval=reviewer", "registry.review_timeout=600")


class Reviewer(threading.Thread):
    """Waits until `version` is paused for review, checks what the reviewer is shown, then runs `lmpipe review`."""

    def __init__(self, uri: str, version: int, *flags: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.version, self.flags = uri, version, flags
        self.seen: dict = {}
        self.error: BaseException | None = None
        self.output = ""

    def run(self) -> None:
        try:
            self.seen = wait_until_waiting(self.uri, self.version)
            command = [sys.executable, "-m", "lmpipe.cli", "review", NAME, str(self.version), *self.flags]
            command += ["--tracking-uri", self.uri, "--wait", "0"]
            env = {**os.environ, "PREFECT_API_URL": self.seen["api_url"]}
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            self.output = done.stdout + done.stderr
            assert done.returncode == 0, self.output
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            self.error = error


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def wait_until_waiting(uri: str, version: int, timeout_s: float = 600) -> dict:
    """What a reviewer sees once the run waits: the version's tags, card and alias, and the run's form."""
    client = MlflowClient(uri)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [v for v in client.search_model_versions(f"name = '{NAME}'") if int(v.version) == version]
        if found and found[0].tags.get(STATUS_TAG) == "awaiting" and found[0].tags.get("lmpipe.complete") == "true":
            with get_client(sync_client=True) as prefect:
                run = prefect.read_flow_run(found[0].tags["review.flow_run_id"])
                if run.state.is_paused():
                    keyset = f"paused-{pause_key(NAME, version)}"
                    form = prefect.read_flow_run_input(run.id, keyset + "-description")
                    return {
                        "version": client.get_model_version(NAME, str(version)),
                        "aliases": aliases(client),
                        "run": run,
                        "form": form,
                        "api_url": PREFECT_API_URL.value(),
                    }
        time.sleep(1)
    raise AssertionError(f"{NAME} v{version} never waited for review within {timeout_s} s")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("review")
    uri = f"sqlite:///{workspace / 'mlflow.db'}"

    def config(*overrides: str):
        return tiny_config(workspace, f"registry.clm_model_name={NAME}", f"registry.tracking_uri={uri}", *overrides)

    runs = {}
    runs["v1"] = clm_flow(config("train.max_steps=8"), return_state=True)
    for label, steps, flags in (("v2", 40, ("--approve", "--note", "reads well")), ("v3", 2, ("--reject",))):
        reviewer = Reviewer(uri, int(label[1:]), *flags)
        reviewer.start()
        runs[label] = clm_flow(config(f"train.max_steps={steps}", *REVIEWER), return_state=True)
        reviewer.join(timeout=300)
        assert reviewer.error is None, reviewer.error
        runs[label + "-review"] = reviewer
        runs[label + "-aliases"] = aliases(MlflowClient(uri))  # as the decision left them
    runs["v4"] = clm_flow(
        config("train.max_steps=4", "registry.approval=reviewer", "registry.review_timeout=10"), return_state=True
    )
    runs["config"] = config
    return uri, runs


def test_a_version_held_for_review_is_challenger_with_the_gate_numbers_on_its_card_and_form(history):
    uri, runs = history
    seen = runs["v2-review"].seen
    version = seen["version"]
    assert seen["aliases"] == {"champion": "1", "challenger": "2"}  # nothing moved before the decision
    assert version.tags["review.gate_alias"] == "champion"  # 40 steps beat 8: the gate alone would promote
    assert version.description.splitlines()[0] == f"# {NAME} v2: awaiting review"
    assert "perplexity" in version.description.split("\n\n")[1]  # the gate's numbers, right under it
    assert AWAITING_REVIEW_TAG in seen["run"].tags and seen["run"].state.name == "Paused"
    form = seen["form"]
    assert f"{NAME} v2" in form and "Champion v1: perplexity" in form
    assert "The gate alone would have given **champion**: perplexity" in form
    assert f"perplexity **{float(version.tags['perplexity']):.2f}**" in form


def test_approving_moves_champion_and_records_the_decision(history):
    uri, runs = history
    assert runs["v2"].is_completed(), runs["v2"].message
    client = MlflowClient(uri)
    v2 = client.get_model_version(NAME, "2")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert runs["v2-aliases"] == {"champion": "2"}  # approved: no longer also the challenger
    assert v2.tags["review.decision"] == "approve" and v2.tags["review.note"] == "reads well"
    assert v2.tags[STATUS_TAG] == "approved" and v2.tags["review.at"].startswith("20")
    assert v2.description.splitlines()[0].startswith(f"# {NAME} v2: approved by a reviewer on ")
    card = client.download_artifacts(v2.run_id, "model_card.md", str(runs["config"]().artifacts.root))
    assert open(card).readline().startswith(f"# {NAME} v2: approved")
    assert "sent 'approve'" in runs["v2-review"].output
    with get_client(sync_client=True) as prefect:
        assert AWAITING_REVIEW_TAG not in prefect.read_flow_run(runs["v2"].state_details.flow_run_id).tags


def test_rejecting_leaves_the_aliases_where_they_were(history):
    uri, runs = history
    assert runs["v3"].is_completed(), runs["v3"].message
    client = MlflowClient(uri)
    assert runs["v3-aliases"] == {"champion": "2", "challenger": "3"}
    v3 = client.get_model_version(NAME, "3")
    assert v3.tags["review.decision"] == "reject" and v3.tags[STATUS_TAG] == "rejected"
    assert v3.tags["review.note"] == ""
    assert v3.description.splitlines()[0].startswith(f"# {NAME} v3: rejected by a reviewer on ")


def test_nobody_deciding_ends_the_run_completed_with_a_note_and_the_version_challenger(history):
    uri, runs = history
    state = runs["v4"]
    assert state.is_completed() and state.message.startswith(f"Nobody decided on {NAME} v4"), state.message
    client = MlflowClient(uri)
    assert aliases(client)["champion"] == "2"
    v4 = client.get_model_version(NAME, "4")
    assert v4.tags["lmpipe.alias"] == "challenger" and v4.tags[STATUS_TAG] == "timed-out"
    assert "review.decision" not in v4.tags
    assert "not reviewed" in v4.description.splitlines()[0]


def test_a_rerun_that_is_all_cached_asks_for_nothing(history):
    uri, runs = history
    started = time.monotonic()
    # v2's config again, with a timeout that would show: a run that asked would wait 600 s for nobody.
    state = clm_flow(runs["config"]("train.max_steps=40", *REVIEWER), return_state=True)
    assert state.is_completed(), state.message
    assert "Nobody" not in (state.message or "")
    assert time.monotonic() - started < 300
    assert len(MlflowClient(uri).search_model_versions(f"name = '{NAME}'")) == 4


def test_lmpipe_review_refuses_a_version_not_waiting_in_one_line(history):
    uri, runs = history
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "lmpipe.cli", "review", NAME, "2", "--approve", "--tracking-uri", uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"lmpipe: {NAME} v2 is not awaiting review (review.status=approved)"


def test_a_version_whose_run_ended_unanswered_is_closed_by_lmpipe_review_and_by_the_next_run(history):
    # What a suspended deployment run leaves when nobody answers: Prefect expires the pause and the automation
    # completes the run, with none of our code running, so the version still says "awaiting". v4's run is over.
    uri, runs = history
    client = MlflowClient(uri)

    def left_awaiting() -> None:
        client.set_model_version_tag(NAME, "4", STATUS_TAG, "awaiting")

    left_awaiting()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "lmpipe.cli", "review", NAME, "4", "--approve", "--tracking-uri", uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, the refusal, and nothing else
    line = lines[0]
    assert "ended Completed without a decision" in line and line.endswith(
        f"{NAME} v4 is now marked timed-out and stays challenger"
    )
    v4 = client.get_model_version(NAME, "4")
    assert v4.tags[STATUS_TAG] == "timed-out" and v4.description.splitlines()[0].startswith(
        f"# {NAME} v4: not reviewed"
    )
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2", "nothing was approved"

    left_awaiting()
    state = clm_flow(runs["config"]("train.max_steps=40", *REVIEWER), return_state=True)  # all Cached, as weekly
    assert state.is_completed(), state.message
    assert client.get_model_version(NAME, "4").tags[STATUS_TAG] == "timed-out"
