"""`lmpipe review MODEL VERSION --approve|--reject --note ...`: answer a waiting review from the terminal.

It sends the same input as the Prefect UI's Resume form, to the flow run that registered the version
(its tag review.flow_run_id), and the resumed run applies the decision in MLflow.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from lmpipe.orchestration.review_wait import close_ended_reviews, pause_key
from lmpipe.registry.approval import AWAITING, CHALLENGER, REVIEW_RUN_TAG, STATUS_TAG, TIMED_OUT

# The refusal is the one line a reviewer reads; closing an ended review logs nothing beside it.
_SAID_BY_THE_REFUSAL = logging.getLogger(f"{__name__}.closing")
_SAID_BY_THE_REFUSAL.propagate = False
_SAID_BY_THE_REFUSAL.addHandler(logging.NullHandler())


class ReviewRefused(Exception):
    """One line saying why the decision cannot be sent."""


def waiting_flow_run(version: Any, name: str, number: int) -> Any:
    """The paused or suspended flow run waiting for this version's review."""
    from prefect.client.orchestration import get_client

    status = version.tags.get(STATUS_TAG)
    if status != AWAITING:
        raise ReviewRefused(f"{name} v{number} is not awaiting review (review.status={status or 'none'})")
    run_id = version.tags.get(REVIEW_RUN_TAG)
    if not run_id:
        raise ReviewRefused(f"{name} v{number} records no flow run to resume (tag {REVIEW_RUN_TAG} is missing)")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    state = run.state
    if state is not None and state.is_final():
        raise ReviewRefused(
            f"flow run {run.name} ({run_id}) ended {state.name} without a decision; {name} v{number} is now "
            f"marked {TIMED_OUT} and stays {CHALLENGER}"
        )
    if state is None or not state.is_paused():
        shown = state.name if state else "unknown"
        raise ReviewRefused(f"flow run {run.name} ({run_id}) is {shown}, not waiting for a reviewer yet; try again")
    if state.state_details.pause_key != pause_key(name, number):
        raise ReviewRefused(f"flow run {run.name} ({run_id}) is waiting for the review of another version first")
    return run


def send_review(
    tracking_uri: str, name: str, number: int, approve: bool, note: str, wait_s: float, poll_s: float = 2.0
) -> str:
    """Resume the waiting run with the decision; with wait_s > 0, wait for it to be applied. Returns a report."""
    from mlflow import MlflowClient
    from prefect.flow_runs import resume_flow_run

    client = MlflowClient(tracking_uri)
    version = client.get_model_version(name, str(number))
    try:
        run = waiting_flow_run(version, name, number)
    except ReviewRefused:
        close_ended_reviews(client, name, _SAID_BY_THE_REFUSAL)  # a run ended unanswered: version and card say so
        raise
    decision = "approve" if approve else "reject"
    resume_flow_run(run.id, run_input={"decision": decision, "note": note})
    sent = f"sent '{decision}' for {name} v{number} to flow run {run.name} ({run.id})"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = client.get_model_version(name, str(number)).tags.get(STATUS_TAG)
        if status != AWAITING:
            return f"{sent}: {name} v{number} is {status}"
        time.sleep(poll_s)
    return f"{sent}; the run applies it when it resumes" + (" (not yet applied)" if wait_s else "")


def review_command(tracking_uri: str, name: str, number: int, approve: bool, note: str, wait_s: float) -> int:
    try:
        print(send_review(tracking_uri, name, number, approve, note, wait_s))
    except ReviewRefused as refusal:
        print(f"lmpipe: {refusal}", file=sys.stderr)
        return 2
    return 0
