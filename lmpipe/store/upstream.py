"""The published artifacts under a root, and the artifacts each was built from, read from the manifests.

A manifest's `inputs` name its upstream artifacts: newer ones by ref (`tokenize/<key>`), older ones by
absolute path (`/old/root/tokenize/<key>/tokenizer`), sometimes nested (training's job dump). Any string
anywhere in them counts when two consecutive parts of it name a published artifact here: the root
part is ignored, so a moved or re-mounted root keeps its chains.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from lmpipe.store.manifest import MANIFEST, read_manifest

# The stage directories, in pipeline order. A directory not named here is not ours to judge: gc leaves it.
STAGES = (
    "download",
    "flatten",
    "tokenize",
    "group",
    "train-clm",
    "train-mlm",
    "evaluate-clm",
    "evaluate-mlm",
    "register-clm",
    "register-mlm",
)


def plain_dir(path: Path) -> bool:
    """A directory that is not a symlink: nothing under the root is followed out of it."""
    return path.is_dir() and not path.is_symlink()


def stage_dirs(root: Path) -> Iterator[Path]:
    for stage in STAGES:
        if plain_dir(root / stage):
            yield root / stage


def published(root: Path) -> dict[str, Path]:
    """Every published artifact (a directory holding its manifest) under `root`, by ref, in pipeline order."""
    found = {}
    for stage_dir in stage_dirs(root):
        for entry in sorted(stage_dir.iterdir()):
            if not entry.name.startswith(".") and plain_dir(entry) and (entry / MANIFEST).is_file():
                found[f"{stage_dir.name}/{entry.name}"] = entry
    return found


def named_refs(value: Any, known: Mapping[str, Path]) -> set[str]:
    """The artifacts of `known` that any string anywhere in `value` names by two consecutive path parts."""
    if isinstance(value, Mapping):
        return set().union(*(named_refs(v, known) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(named_refs(v, known) for v in value))
    if not isinstance(value, str):
        return set()
    parts = PurePosixPath(value).parts
    return {f"{a}/{b}" for a, b in zip(parts, parts[1:], strict=False) if f"{a}/{b}" in known}


def upstream_closure(refs: set[str], known: Mapping[str, Path]) -> set[str]:
    """`refs` (those of `known`) and every artifact their manifests' inputs name, transitively."""
    seen: set[str] = set()
    pending = [ref for ref in refs if ref in known]
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        try:
            inputs = read_manifest(known[ref]).get("inputs", {})
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: such an artifact is never a cache hit, and names nothing we can read
        pending.extend(named_refs(inputs, known) - seen)
    return seen
