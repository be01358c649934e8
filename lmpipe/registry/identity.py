"""What a registration is called and found by: the registered-model name, the tracking URI, the
idempotency key, and the flow run it came from.

Cheap to import (no MLflow, no torch): the register stage's cache key uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective, spec_of
from lmpipe.registry.tracking import resolve_tracking_uri
from lmpipe.store.keys import fingerprint


def tracking_uri(config: PipelineConfig) -> str:
    return resolve_tracking_uri(config.registry.tracking_uri)


def registered_name(config: PipelineConfig, objective: Objective) -> str:
    return spec_of(objective).registered_name(config.registry)


def registration_key(model_dir: Path, eval_dir: Path) -> str:
    """The same trained model with the same evaluation is one version, whichever flow run registers it."""
    return fingerprint({"model": Path(model_dir).name, "eval": Path(eval_dir).name})


class FlowRun(NamedTuple):
    """The Prefect flow run doing a registration, for the lineage tags; empty outside one."""

    id: str | None = None
    url: str | None = None


OUTSIDE_PREFECT = FlowRun()
