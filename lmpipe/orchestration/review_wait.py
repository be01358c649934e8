"""The flow waits for a person (registry.approval=reviewer), with Prefect's own pause and input form.

After register, each version this flow run registered for review is put to a reviewer, one at a time:
- a flow run a worker started (from a deployment) is *suspended*: its process exits and frees the
  worker; approving resumes it on a worker, where every stage is Cached and this step reads the answer;
- a flow run started here (`lmpipe run` against a server, or a test) is *paused* in its process.
Either way the Prefect UI shows the run's Resume form (ReviewDecision), whose description carries the
MLflow version link and the perplexity comparison; `lmpipe review` sends the same input. While it
waits the run carries the tag `awaiting-review` (filter on it, or on the Paused/Suspended state).

A version this run did not register (a scheduled run that is all Cached) is never put to review again.
Nobody deciding within registry.review_timeout leaves the version 'challenger' and ends the run
Completed with a message saying so: in-process, here; for a suspended run, by a Prefect automation
(created once, see `ensure_timeout_automation`) that turns Prefect's "paused and never resumed"
failure of a run of our flows into a Completed state named "Not reviewed".
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field

from lmpipe.config.schema import PipelineConfig
from lmpipe.registry.approval import REVIEW_RUN_TAG

AWAITING_REVIEW_TAG = "awaiting-review"  # on the flow run while it waits
REGISTRATION_FILE = "registration.json"
TIMEOUT_AUTOMATION = "lmpipe: end runs whose review timed out"
# What Prefect's pause-expiry service writes when it fails a suspended run nobody resumed in time.
PAUSE_EXPIRED_MESSAGE = "The flow was paused and never resumed."
NOT_REVIEWED_STATE = "Not reviewed"
REVIEWING_FLOWS = ("clm", "mlm", "both")  # the flows that wait for reviewers (flows/*.py, prefect.yaml)
POLL_S = 5  # how often a paused (in-process) run asks the server whether it was resumed

_log = logging.getLogger(__name__)


class ReviewDecision(RunInput):
    """The reviewer's answer: the form Prefect shows on the waiting flow run."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: this version becomes 'champion'. reject: the aliases stay as they are."
    )
    note: str = Field("", max_length=2000, description="Why; kept on the version (tag review.note) and its card.")


def pause_key(name: str, version: int) -> str:
    """One pause per version, stable across the re-runs a suspended flow makes (Prefect keys: [a-z0-9-])."""
    return f"review-v{version}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def form_description(registration: dict[str, Any], version_tags: dict[str, str]) -> str:
    """Markdown above the form: which version, where to see it, and the numbers the gate decided on."""
    name, number = registration["model_name"], registration["version"]
    lines = [f"### Review {name} v{number}"]
    if registration.get("version_url"):
        lines.append(f"MLflow: [{name} v{number}]({registration['version_url']})")
    measured = f"perplexity **{registration['perplexity']:.2f}** (base model {registration['base_perplexity']:.2f})"
    if version_tags.get("bits_per_byte"):
        measured += f", bits per byte **{version_tags['bits_per_byte']}**"
    lines.append(f"This version: {measured}.")
    if version_tags.get("champion.version"):
        lines.append(
            f"Champion v{version_tags['champion.version']}: perplexity {version_tags.get('champion.perplexity', '?')}"
            + (
                f", bits per byte {version_tags['champion.bits_per_byte']}"
                if "champion.bits_per_byte" in version_tags
                else ""
            )
            + " on this version's evaluation set."
        )
    gate = f"The gate alone would have given **{version_tags.get('review.gate_alias', '?')}**"
    lines.append(gate + (f": {version_tags['review.gate_reason']}." if version_tags.get("review.gate_reason") else "."))
    lines.append("Approve to make it champion; reject to leave the aliases as they are.")
    return "\n\n".join(line for line in lines if line)


def await_reviews(registration_dirs: list[str], config: PipelineConfig) -> str | None:
    """Put each version this run registered to a reviewer and apply the answer; returns a note when nobody
    decided on some version in time (the flow ends Completed with it), else None."""
    if config.registry.approval != "reviewer" or not config.registry.promote:
        return None
    from mlflow import MlflowClient
    from prefect import get_run_logger, runtime

    from lmpipe.orchestration.registry_writer import registry_writer
    from lmpipe.registry.approval import AWAITING, record_decision, record_timeout, review_status
    from lmpipe.registry.identity import tracking_uri

    log = get_run_logger()
    client = MlflowClient(tracking_uri(config))
    this_run = str(runtime.flow_run.id)
    registrations = [json.loads((Path(directory) / REGISTRATION_FILE).read_text()) for directory in registration_dirs]
    for name in sorted({registration["model_name"] for registration in registrations}):
        with registry_writer(name, log):
            close_ended_reviews(client, name, log)
    undecided = []
    for registration in registrations:
        name, number = registration["model_name"], registration["version"]
        version = client.get_model_version(name, str(number))
        if review_status(version) != AWAITING or version.tags.get(REVIEW_RUN_TAG) != this_run:
            log.info(f"review: {name} v{number} is not waiting for this run's reviewer ({review_status(version)})")
            continue
        answer = wait_for_reviewer(name, number, form_description(registration, version.tags), config, log)
        if answer is None:
            record_timeout(client, name, number, log)
            undecided.append(f"{name} v{number}")
            continue
        with registry_writer(name, log):  # the champion alias moves under the model's one-writer limit
            record_decision(client, name, number, answer.decision, answer.note, log)
    if undecided:
        return (
            f"Nobody decided on {', '.join(undecided)} within registry.review_timeout="
            f"{config.registry.review_timeout} s; it stays challenger"
        )
    return None


def close_ended_reviews(client: Any, name: str, log: logging.Logger | logging.LoggerAdapter = _log) -> list[int]:
    """Versions of `name` still tagged awaiting whose flow run has ended are marked timed-out; returns their numbers.

    A suspended run nobody resumed ends without running any of our code (Prefect expires the pause, the
    automation completes the run), so its version would say "awaiting review" for ever. The next reviewing run
    of the model, or `lmpipe review` of that version, closes it here, as an in-process pause does itself."""
    from lmpipe.registry.approval import AWAITING, STATUS_TAG, record_timeout

    closed = []
    for version in client.search_model_versions(f"name = '{name}' and tags.`{STATUS_TAG}` = '{AWAITING}'"):
        if review_run_ended(version.tags.get(REVIEW_RUN_TAG)):
            record_timeout(client, name, int(version.version), log)
            closed.append(int(version.version))
    return closed


def review_run_ended(run_id: str | None) -> bool:
    """Whether the flow run a version waits on is over. A run this Prefect server does not know is left alone:
    it may wait on another server that shares the MLflow registry."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    if not run_id:
        return False
    with get_client(sync_client=True) as prefect:
        try:
            state = prefect.read_flow_run(run_id).state
        except ObjectNotFound:
            return False
    return state is not None and state.is_final()


def wait_for_reviewer(
    name: str, version: int, description: str, config: PipelineConfig, log: logging.Logger | logging.LoggerAdapter
) -> ReviewDecision | None:
    """The reviewer's decision, or None after registry.review_timeout. A deployment's run is suspended (this
    process exits, raising Prefect's Pause, and the answer is read when the run is resumed and re-run)."""
    from prefect import runtime
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    form = ReviewDecision.with_initial_data(description=description)
    key, timeout = pause_key(name, version), config.registry.review_timeout
    run_id = runtime.flow_run.id
    tag_flow_run(run_id, add=True)
    log.info(
        f"review: {name} v{version} waits for a reviewer (up to {timeout} s): approve or reject it on this flow "
        f"run's Resume form in the Prefect UI, or `lmpipe review {name} {version} --approve|--reject --note ...`"
    )
    try:
        if runtime.deployment.id:  # a worker runs it: suspend, freeing the worker
            ensure_timeout_automation()
            answer = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)  # raises Pause the first time
        else:
            answer = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=POLL_S, key=key)
    except FlowPauseTimeout:
        # Prefect would fail a run that goes on from an expired pause; nobody deciding is not a failure here.
        resume_running(run_id)
        answer = None
    except Exception:
        tag_flow_run(run_id, add=False)  # a run that failed is not waiting for anyone
        raise
    tag_flow_run(run_id, add=False)
    return answer


def tag_flow_run(run_id: Any, add: bool) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        tags = set(client.read_flow_run(run_id).tags)
        wanted = tags | {AWAITING_REVIEW_TAG} if add else tags - {AWAITING_REVIEW_TAG}
        if wanted != tags:
            client.update_flow_run(run_id, tags=sorted(wanted))


def resume_running(run_id: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(message="review timed out; finishing"), force=True)


def ensure_timeout_automation() -> None:
    """The automation that ends a suspended run whose review timed out as Completed, not Failed (made once).

    It matches Prefect's pause-expiry failure of a run of our flows. Not the `awaiting-review` tag: the server
    caches a run's related resources (its tags among them) for its events, so a tag added while the run is
    going never reaches them (seen with Prefect 3.8.8). Our flows pause for nothing but review."""
    from prefect.automations import Automation

    wanted = timeout_automation()
    try:
        found = Automation.read(name=TIMEOUT_AUTOMATION)
    except ValueError:
        found = None
    if found is not None and found.trigger.model_dump(exclude={"id"}) == wanted.trigger.model_dump(exclude={"id"}):
        return
    if found is not None:  # made by an earlier lmpipe with another trigger
        found.delete()
    wanted.create()


def timeout_automation() -> Any:
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=TIMEOUT_AUTOMATION,
        description="A flow run of lmpipe's flows suspended for model review that nobody resumed within "
        "registry.review_timeout ends Completed: its version stays challenger.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*", "prefect.state-message": PAUSE_EXPIRED_MESSAGE},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(REVIEWING_FLOWS)},
            expect={"prefect.flow-run.Failed"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.COMPLETED,
                name=NOT_REVIEWED_STATE,
                message="Nobody decided within registry.review_timeout; the version stays challenger",
                force=True,
            )
        ],
    )


def reviewed(registrations: list[str], config: PipelineConfig) -> Any:
    """The flow's return value once reviews are done: the registration directories, in a Completed state whose
    message says so when nobody decided in time."""
    note = await_reviews(registrations, config)
    if note is None:
        return registrations
    from prefect.states import Completed

    return Completed(message=note, data=registrations)
