"""A person approves champion in the Prefect UI (registry.approval=reviewer), on the real stack.

Two runs of the clm-cpu deployment register ui-review v1 and v2 for review. Each is *suspended*
(its process exits; the worker and the deployment's one slot are free, which the second run proves
by running while the first waits). Headless Chromium then answers each run's Resume form in the
Prefect UI: approve v1, reject v2. Each resumed run is re-run by the worker (every stage Cached),
applies the decision, and ends Completed; MLflow says who is champion. A third run nobody answers
ends Completed in the state "Not reviewed" (Prefect's pause expiry, then our automation).
"""

from __future__ import annotations

import pytest
from e2e_stack import TEST_ARTIFACTS, wait_for_final_state
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from test_deployments import chromium_or_skip, deployment

pytestmark = pytest.mark.e2e

NAME = "ui-review"


def start_run(stack, *overrides: str):
    parameters = stack.tiny_parameters(f"registry.clm_model_name={NAME}", "registry.approval=reviewer", *overrides)
    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(deployment("clm/clm-cpu").id, parameters=parameters)


def wait_for_state_name(flow_run_id, name: str, timeout_s: float = 600, past_final: bool = False):
    import time

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.name == name:
                return run
            ended = run.state is not None and run.state.is_final() and not past_final
            assert not ended, f"{flow_run_id} ended {run.state.name}: {run.state.message}"
            assert time.monotonic() < deadline, f"flow run {flow_run_id} still {run.state.name} after {timeout_s} s"
            time.sleep(2)


def answer_in_the_ui(page, stack, flow_run_id, decision: str, note: str, shot: str) -> None:
    """What a reviewer does: open the run, press Resume, read the form, choose, submit."""
    from playwright.sync_api import expect

    page.goto(f"{stack.prefect_url}/runs/flow-run/{flow_run_id}")
    resume = page.get_by_role("button", name="Resume")
    expect(resume).to_be_visible(timeout=60_000)
    resume.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Review {NAME} v", exact=False)).to_be_visible(timeout=30_000)  # the description
    expect(dialog.get_by_text("The gate alone would have given", exact=False).first).to_be_visible()
    dialog.get_by_text("Decision", exact=False).first.wait_for(timeout=30_000)
    choose(page, dialog, decision)
    dialog.locator("textarea, input[type='text']").last.fill(note)
    page.screenshot(path=str(TEST_ARTIFACTS / f"{shot}-form.png"))
    dialog.get_by_role("button", name="Submit").click()
    expect(dialog).to_be_hidden(timeout=30_000)


def choose(page, dialog, decision: str) -> None:
    """The decision field: Prefect's UI draws a Literal as its own select. In headless Chromium a click only
    focuses it; the arrow key opens its options, as for a keyboard user."""
    from playwright.sync_api import expect

    control = dialog.locator(".p-select-button__control").first
    control.click()
    control.press("ArrowDown")
    page.locator(".p-select-option", has_text=decision).first.click()
    expect(dialog.locator(".p-select-button__value").first).to_contain_text(decision)


def test_a_reviewer_approves_one_version_and_rejects_another_in_the_prefect_ui(stack):
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    first = start_run(stack, "train.max_steps=8")
    wait_for_state_name(first.id, "Suspended")
    # The first run waits without a process: the worker and the deployment's slot take the next run.
    second = start_run(stack, "train.max_steps=4")
    wait_for_state_name(second.id, "Suspended")
    with get_client(sync_client=True) as client:
        for run_id in (first.id, second.id):
            assert "awaiting-review" in client.read_flow_run(run_id).tags
    registry = MlflowClient(stack.mlflow_url)
    aliases = {alias: str(v) for alias, v in registry.get_registered_model(NAME).aliases.items()}
    assert aliases == {"challenger": "2"}  # nobody is champion yet

    TEST_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            answer_in_the_ui(page, stack, first.id, "approve", "reads well", "prefect-ui-review-approve")
            assert wait_for_final_state(first.id).state.is_completed()
            answer_in_the_ui(page, stack, second.id, "reject", "too few steps", "prefect-ui-review-reject")
            assert wait_for_final_state(second.id).state.is_completed()
        except BaseException:
            page.screenshot(path=str(TEST_ARTIFACTS / "prefect-ui-review-failure.png"), full_page=True)
            (TEST_ARTIFACTS / "prefect-ui-review-failure.html").write_text(page.content())
            raise
        finally:
            browser.close()

    assert str(registry.get_model_version_by_alias(NAME, "champion").version) == "1"  # approved
    v1, v2 = (registry.get_model_version(NAME, n) for n in ("1", "2"))
    assert (v1.tags["review.decision"], v1.tags["review.note"]) == ("approve", "reads well")
    assert (v2.tags["review.decision"], v2.tags["review.note"]) == ("reject", "too few steps")
    assert v2.tags["lmpipe.alias"] == "challenger"
    assert v2.description.splitlines()[0].startswith(f"# {NAME} v2: rejected by a reviewer")
    with get_client(sync_client=True) as client:
        for run_id in (first.id, second.id):
            assert "awaiting-review" not in client.read_flow_run(run_id).tags


def test_a_suspended_review_nobody_answers_ends_completed_as_not_reviewed(stack):
    run = start_run(stack, "train.max_steps=6", "registry.review_timeout=10")
    wait_for_state_name(run.id, "Suspended")
    # Prefect's pause expiry fails it; the automation turns that into Completed.
    finished = wait_for_state_name(run.id, "Not reviewed", timeout_s=180, past_final=True)
    assert finished.state.is_completed()
    assert "Nobody decided" in finished.state.message
    (version,) = [
        v
        for v in MlflowClient(stack.mlflow_url).search_model_versions(f"name = '{NAME}'")
        if v.tags.get("review.flow_run_id") == str(run.id)
    ]
    assert version.tags["lmpipe.alias"] == "challenger"
    # None of our code ran when the pause expired, so the version still says awaiting; the first reviewer
    # who tries it is told the run ended, and the version and its card say "not reviewed" from then on.
    from lmpipe.cli.review_command import ReviewRefused, send_review

    assert version.tags["review.status"] == "awaiting"
    with pytest.raises(ReviewRefused, match=f"ended Not reviewed without a decision; {NAME} v{version.version} is now"):
        send_review(stack.mlflow_url, NAME, int(version.version), approve=True, note="", wait_s=0)
    closed = MlflowClient(stack.mlflow_url).get_model_version(NAME, version.version)
    assert closed.tags["review.status"] == "timed-out"
    assert closed.description.splitlines()[0].startswith(f"# {NAME} v{version.version}: not reviewed")
