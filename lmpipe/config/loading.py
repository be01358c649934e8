"""Load the config tree: a YAML file, then dotted command-line overrides, validated in one place.

lmpipe run --config configs/default.yaml --set train.epochs=2 --set data.block_size=64
Every problem becomes one ConfigError line naming the field and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lmpipe.config.paths import require_allowed_paths
from lmpipe.config.schema import PipelineConfig
from lmpipe.errors import ConfigError


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one 'a.b.c=value' override in place; the value is parsed as YAML ('2' -> 2, 'null' -> None)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    dotted, raw_value = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = parse_override_value(raw_value)


def parse_override_value(raw: str) -> Any:
    """YAML scalars ('2' -> 2, 'null' -> None), plus floats YAML 1.1 leaves as text ('5e-4')."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str) and not raw.strip().startswith(("'", '"')):  # quoted text stays text
        try:
            return float(value)
        except ValueError:
            return value
    return value


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: 'train.learning_rate = -1.0: Input should be greater than 0'."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown key {field!r}")
        elif problem["loc"] and not message.startswith(f"{field}."):  # a section's own check names its field
            lines.append(f"{field} = {problem.get('input')!r}: {message}")
        else:
            lines.append(message)
    return "; ".join(lines)


def validate_config(tree: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(f"invalid config: {describe_validation_error(error)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a YAML config (None: all defaults), apply dotted overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}".replace("\n", " ")) from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for assignment in overrides:
        apply_override(tree, assignment)
    return require_allowed_paths(validate_config(tree))
