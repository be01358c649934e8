"""Paths a run may touch: local inputs under the data root, artifacts under the artifact root.

Parameters of a run submitted from the Prefect UI are typed by people; the roots are not
parameters but the worker's environment, so a form cannot widen them.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmpipe.config.schema import PipelineConfig
from lmpipe.errors import ConfigError
from lmpipe.objectives import OBJECTIVES

DATA_ROOT_ENV, ARTIFACTS_ROOT_ENV = "LMPIPE_DATA_ROOT", "LMPIPE_ARTIFACTS_ROOT"


def require_allowed_paths(config: PipelineConfig) -> PipelineConfig:
    """Raise ConfigError naming each path outside its allowed root. Every flow calls it first (the
    parameters of a UI run arrive there), and so does load_config. It is not a model validator:
    the flows' default config is built at import, where the worker's roots must not break loading."""
    outside = paths_outside_allowed_roots(config)
    if outside:
        raise ConfigError("invalid config: " + "; ".join(f"{field}: {problem}" for field, problem in outside))
    return config


def paths_outside_allowed_roots(config: PipelineConfig) -> list[tuple[str, str]]:
    """(field, problem) for each local path that resolves (after `..` and symlinks) outside its root."""
    problems = []
    data_root, artifacts_root = os.environ.get(DATA_ROOT_ENV), os.environ.get(ARTIFACTS_ROOT_ENV)
    if data_root:
        local_inputs = {"tokenizer.pretrained": config.tokenizer.pretrained}
        for name in OBJECTIVES:
            model = getattr(config.model, name)
            local_inputs |= {f"model.{name}.pretrained": model.pretrained, f"model.{name}.tokenizer": model.tokenizer}
        if config.data.source == "local":
            local_inputs["data.path"] = _glob_base(config.data.path or "")
        for field, value in local_inputs.items():
            # Names that are no local path are Hub ids; the Hub, not the disk, answers for those.
            if value and (field == "data.path" or Path(value).expanduser().exists()):
                if not _is_under(value, data_root):
                    problems.append(
                        (field, f"{value!r} is outside the allowed data root {data_root} (${DATA_ROOT_ENV})")
                    )
    if artifacts_root and not _is_under(config.artifacts.root, artifacts_root):
        problems.append(
            (
                "artifacts.root",
                f"{config.artifacts.root!r} is outside the allowed root {artifacts_root} (${ARTIFACTS_ROOT_ENV})",
            )
        )
    return problems


def _glob_base(pattern: str) -> str:
    """'data/**/*.jsonl' -> 'data': the directory a glob can reach no higher than."""
    parts = Path(pattern).parts
    cut = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    return str(Path(*parts[:cut])) if cut else "."


def _is_under(path: str, root: str) -> bool:
    resolved, base = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    return resolved == base or base in resolved.parents
