"""Create or update Prefect work pools from the commented YAML templates in deployments/.

    lmpipe pool create deployments/cpu-process.yaml deployments/gpu-kubernetes.yaml

A template file holds `name`, `type`, `description` and `base_job_template` (null: the worker
type's default). YAML rather than Prefect's JSON so that each file can open with the command
that creates its pool and notes on its knobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lmpipe.errors import ConfigError

_KEYS = {"name", "type", "description", "base_job_template"}


def load_pool_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"work pool file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - _KEYS
    if unknown or not spec.get("name") or not spec.get("type"):
        raise ConfigError(
            f"{path}: a work pool file needs name and type (and may have description, "
            f"base_job_template); unknown keys: {sorted(unknown)}"
        )
    return spec


async def create_or_update_pool(spec: dict[str, Any]) -> str:
    """Create the pool, or overwrite its template and description; returns what was done."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    template = spec.get("base_job_template") or await get_default_base_job_template_for_infrastructure_type(
        spec["type"]
    )
    async with get_client() as client:
        try:
            await client.read_work_pool(spec["name"])
            existed = True
        except ObjectNotFound:
            existed = False
        pool = WorkPoolCreate(
            name=spec["name"], type=spec["type"], description=spec.get("description"), base_job_template=template or {}
        )
        await client.create_work_pool(work_pool=pool, overwrite=True)
    return f"{'updated' if existed else 'created'} work pool {spec['name']!r} ({spec['type']})"
