"""The pre-flight: before any stage runs, everything that can be known up front, in seconds.

A run that cannot succeed should say so before it downloads, tokenizes and trains for an hour,
not after. Each problem is one PreflightFailed line naming the field (the CLI exits 2: nothing
ran). Checked, in this order:
- paths from the UI stay under the worker's allowed roots, and the artifacts root is writable;
- local data files exist (with a glob hint for a directory);
- local model and tokenizer directories exist and hold what loading needs (config.json that
  parses, weights, tokenizer files), each named with its field;
- the Hugging Face Hub answers, when something is to come from it;
- train.fsdp only for what FSDP can shard (the causal LM);
- with train.launcher=ray, Ray is installed and a cluster answers at train.ray_address;
- the registry is ready: the SQLite store created or migrated here (never inside register, where
  a kill would land in MLflow's schema change), or the tracking server answering; the experiment
  active. The registered-model names were checked with the config.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from lmpipe.compute.ray_cluster import cluster_problem
from lmpipe.config.paths import require_allowed_paths
from lmpipe.config.pretrained import local_model_problem, local_tokenizer_problem, looks_like_a_path
from lmpipe.config.schema import PipelineConfig
from lmpipe.data.hub import require_hub
from lmpipe.data.sources import local_files
from lmpipe.data.tokenizer_choice import tokenizer_origin
from lmpipe.errors import HubUnreachableError, PipelineInputError, PreflightFailed
from lmpipe.objectives import Objective, spec_of
from lmpipe.registry.identity import tracking_uri
from lmpipe.registry.readiness import check_registry

_log = logging.getLogger(__name__)


def preflight(
    config: PipelineConfig,
    objectives: tuple[Objective, ...],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> None:
    """Raise PreflightFailed, naming the field, for the first thing that would make this run fail."""
    started = time.monotonic()
    require_allowed_paths(config)  # parameters from the UI: paths must stay under the worker's roots
    require_writable_root(config.artifacts.root)
    if config.data.source == "local":
        try:
            local_files(config.data)
        except PipelineInputError as error:
            raise PreflightFailed(str(error)) from None
    for objective in objectives:
        require_local_references(config, objective)
    try:
        require_reachable_hub(config, objectives)
    except HubUnreachableError as error:
        raise PreflightFailed(str(error)) from None
    if config.train.fsdp and any(spec_of(objective).masked for objective in objectives):
        # Measured (accelerate 1.15, CPU and the same code path on GPUs): FSDP2 cannot wrap RoBERTa's
        # embedding and output layer, which share their weight and their bias.
        raise PreflightFailed(
            f"train.fsdp={config.train.fsdp!r}: the masked LM cannot be sharded with FSDP here (its embedding and "
            "output layer share weights); train it with DDP (train.fsdp='') or run the clm flow"
        )
    if config.train.launcher == "ray" and (problem := cluster_problem(config.train.ray_address)):
        raise PreflightFailed(problem)
    if problem := unreachable_reviewer(config):
        raise PreflightFailed(problem)
    check_registry(tracking_uri(config), config.registry.experiment, log)
    log.info(f"pre-flight: data, models and registry ready ({time.monotonic() - started:.1f} s)")


def unreachable_reviewer(config: PipelineConfig) -> str | None:
    """registry.approval=reviewer waits for a person's form on this run: a server only this process knows
    (`lmpipe run`'s private temporary one) could never show it to anyone."""
    from prefect.settings import PREFECT_API_URL

    from lmpipe.orchestration.temporary_server import serves_this_process_alone

    if (
        config.registry.approval == "reviewer"
        and config.registry.promote
        and serves_this_process_alone(PREFECT_API_URL.value())
    ):
        return (
            "registry.approval='reviewer': this run has only a private temporary Prefect server, where no reviewer "
            "could see its form; start one (`make serve`, or set PREFECT_API_URL) or use registry.approval='automatic'"
        )
    return None


def require_writable_root(root: str) -> None:
    directory = Path(root).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".preflight-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PreflightFailed(f"artifacts.root={root!r}: cannot write there ({reason})") from None


def require_local_references(config: PipelineConfig, objective: Objective) -> None:
    """A local model or tokenizer directory exists and holds what loading it needs."""
    model = getattr(config.model, objective)
    if model.pretrained and looks_like_a_path(model.pretrained):
        field = f"model.{objective}.pretrained"
        try:
            problem = local_model_problem(Path(model.pretrained).expanduser().absolute())
        except ValueError as error:  # a config.json that does not parse names its file
            problem = str(error)
        if problem is not None:
            raise PreflightFailed(f"{field}={model.pretrained!r}: {problem}")
    source, _, field = tokenizer_origin(config, objective)
    if source and looks_like_a_path(source):
        problem = local_tokenizer_problem(Path(source).expanduser().absolute())
        if problem is not None:
            hint = "" if field == "tokenizer.pretrained" else "; or name a tokenizer with model.{o}.tokenizer"
            raise PreflightFailed(f"{field}={source!r}: {problem}{hint.format(o=objective)}")


def require_reachable_hub(config: PipelineConfig, objectives: tuple[Objective, ...]) -> None:
    """The Hub answers, if the dataset, a model or a tokenizer is to come from it (HF_HUB_OFFLINE=1: the
    local Hugging Face cache is used instead, and not checked here)."""
    if config.data.source == "hub":
        require_hub(
            f"dataset {config.data.path!r}",
            field="data.path",
            alternatives="Use data.source=local with local files, or data.source=builtin for the offline corpus",
        )
    for objective in objectives:
        model = getattr(config.model, objective)
        if model.pretrained and not looks_like_a_path(model.pretrained):
            require_hub(
                f"model {model.pretrained!r}",
                field=f"model.{objective}.pretrained",
                alternatives="Point it at a local save_pretrained directory, or set it to null to train from scratch",
            )
        source, _, field = tokenizer_origin(config, objective)
        if source and not looks_like_a_path(source):
            require_hub(
                f"tokenizer {source!r}",
                field=field,
                alternatives="Point it at a local save_pretrained directory, or set it to null to train one here",
            )
