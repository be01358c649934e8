"""The Prefect flow run a task runs in, as the registry records it."""

from __future__ import annotations

from prefect import runtime
from prefect.settings import PREFECT_UI_URL

from lmpipe.registry.identity import FlowRun


def current_flow_run() -> FlowRun:
    """The id and UI link of the current flow run; empty outside one."""
    run_id = runtime.flow_run.id
    if not run_id:
        return FlowRun()
    ui = PREFECT_UI_URL.value()
    return FlowRun(str(run_id), f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None)
