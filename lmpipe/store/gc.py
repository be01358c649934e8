"""`lmpipe gc`: what on the artifact root no one needs any more, and why.

Three kinds of directory go:
- artifacts that no registered model version needs and no run used in the last DAYS days. A version
  needs its register artifact (while the registry still holds that version) and the artifacts its
  `lmpipe.artifacts` tag names, each with its upstream closure: every artifact any string of a
  manifest's `inputs` names, as a ref (`tokenize/<key>`) or as an older absolute path (only the
  `<stage>/<key>` part counts, so a moved root keeps its chains). Artifacts used lately are kept with
  their closure too: a cache hit today may need to rebuild from them tomorrow;
- training checkpoints untouched for DAYS (a training in progress writes, and holds their lock);
- scratch (`.<key>.building-*`) and discarded (`.<key>.discarded-*`) directories, left by builds (or
  a gc) that were killed, whatever their age: the sweep removes one only if its artifact's lock is
  free, and every live build holds it.
This module only plans; lmpipe.store.sweep removes, each directory under its lock. The registry is read
by the caller (the store never imports MLflow) and handed in as a `Registry`. A registration that
registry can neither confirm nor deny (recorded in another registry, or unreadable) keeps its chain:
gc never deletes on uncertainty.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.store.upstream import named_refs, plain_dir, published, stage_dirs, upstream_closure
from lmpipe.store.usage import last_used

CHECKPOINTS = "checkpoints"
# On a model version: a JSON list of the refs it was made from (lmpipe.registry.register writes it; the store
# cannot import the registry layer, so the name is repeated here).
ARTIFACTS_TAG = "lmpipe.artifacts"
LEFTOVER = re.compile(r"^\.(?P<key>.+)\.(?P<kind>building|discarded)-[0-9a-f]{8}$")
DAY_S = 86_400.0


class UnreadableRegistry(ValueError):
    """What the registry says cannot be read for sure: gc deletes nothing."""


@dataclass(frozen=True)
class Registry:
    """What the model registry holds, as the caller read it."""

    uri: str  # the tracking URI as registration.json records it (credentials masked)
    versions: Mapping[str, Mapping[int, Mapping[str, str]]]  # model name -> version -> its tags


@dataclass(frozen=True)
class Garbage:
    kind: str  # artifact, checkpoint, scratch or discarded
    ref: str  # where it is under the root: `<stage>/<key>`, `<stage>/.<key>.building-1a2b3c4d`
    path: Path
    owner: Path  # the artifact (or checkpoint) directory whose lock guards it
    bytes: int
    why: str
    stale_before: float | None = None  # artifacts and checkpoints: still garbage only if last used before this


@dataclass
class Plan:
    garbage: list[Garbage] = field(default_factory=list)
    needed: int = 0  # artifacts kept because registered versions need them
    versions: int = 0  # the registered versions that need them
    recent: int = 0  # more artifacts kept because a run used them (or what they were built from) lately
    unchecked: list[str] = field(default_factory=list)  # why each registration was kept unchecked


# ---------------------------------------------------------------------------- registrations


def registration(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / "registration.json").read_text())
        return record if isinstance(record.get("model_name"), str) and isinstance(record.get("version"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def registered_names(root: Path) -> set[str]:
    """Model names the register artifacts under `root` hold versions of: the caller reads these from the registry."""
    records = (registration(d) for ref, d in published(root).items() if ref.startswith("register-"))
    return {r["model_name"] for r in records if r is not None}


def tagged_refs(tags: Mapping[str, str], name: str, version: int) -> list[str]:
    if ARTIFACTS_TAG not in tags:
        return []
    try:
        refs = json.loads(tags[ARTIFACTS_TAG])
        if isinstance(refs, list) and all(isinstance(ref, str) for ref in refs):
            return refs
    except ValueError:
        pass
    raise UnreadableRegistry(f"{name} version {version}: its {ARTIFACTS_TAG} tag is not a JSON list of artifact refs")


# ---------------------------------------------------------------------------- the plan


def plan(root: Path, registry: Registry, older_than_s: float, now: float | None = None) -> Plan:
    """What `lmpipe gc` frees under `root`: artifacts, checkpoints and leftovers, with why; nothing is removed here."""
    now = time.time() if now is None else now
    cutoff = now - older_than_s
    known = published(root)
    result = Plan()

    needing: dict[tuple[str, int], set[str]] = {}  # each registered version -> the refs it names
    gone: dict[str, str] = {}  # register artifacts whose version the registry no longer holds -> why
    unchecked: set[str] = set()
    for ref, directory in known.items():
        if not ref.startswith("register-"):
            continue
        record = registration(directory)
        if record is None:
            unchecked.add(ref)
            result.unchecked.append("with registration.json unreadable")
        elif record.get("tracking_uri", registry.uri) != registry.uri:
            unchecked.add(ref)
            result.unchecked.append(f"registered at {record['tracking_uri']}")
        elif record["version"] in registry.versions.get(record["model_name"], {}):
            needing.setdefault((record["model_name"], record["version"]), set()).add(ref)
        else:
            gone[ref] = f"{record['model_name']} version {record['version']} is no longer registered"
    for name, versions in registry.versions.items():
        for version, tags in versions.items():
            refs = {ref for tag_ref in tagged_refs(tags, name, version) for ref in named_refs(tag_ref, known)}
            if refs:
                needing.setdefault((name, version), set()).update(refs)

    needed = upstream_closure(set().union(unchecked, *needing.values()), known)
    recent = upstream_closure({ref for ref, d in known.items() if (last_used(d) or 0.0) >= cutoff}, known) - needed
    result.needed, result.versions, result.recent = len(needed), len(needing), len(recent)
    for ref, directory in known.items():
        if ref in needed or ref in recent:
            continue
        age = f"last used {(now - (last_used(directory) or 0.0)) / DAY_S:.1f} days ago"
        why = f"{gone.get(ref, 'no registered version needs it')}; {age}"
        result.garbage.append(_garbage("artifact", root, directory, directory, why, cutoff))
    result.garbage += old_checkpoints(root, cutoff, now) + leftovers(root)
    return result


def old_checkpoints(root: Path, cutoff: float, now: float) -> list[Garbage]:
    checkpoints = root / CHECKPOINTS
    if not plain_dir(checkpoints):
        return []
    found = []
    for entry in sorted(checkpoints.iterdir()):
        if entry.name.startswith(".") or not plain_dir(entry):
            continue
        touched = newest_change(entry)
        if touched < cutoff:
            why = f"untouched for {(now - touched) / DAY_S:.1f} days"
            found.append(_garbage("checkpoint", root, entry, entry, why, cutoff))
    return found


def leftovers(root: Path) -> list[Garbage]:
    """Scratch and discarded directories in the stage and checkpoint directories, whatever their age."""
    found = []
    checkpoints = [root / CHECKPOINTS] if plain_dir(root / CHECKPOINTS) else []
    for parent in [*stage_dirs(root), *checkpoints]:
        for entry in sorted(parent.iterdir()):
            match = LEFTOVER.match(entry.name)
            if match is None or not plain_dir(entry):
                continue
            kind = "scratch" if match["kind"] == "building" else "discarded"
            why = "left by a build that was killed" if kind == "scratch" else "left by a build or a gc that was killed"
            found.append(_garbage(kind, root, entry, parent / match["key"], why))
    return found


def _garbage(kind: str, root: Path, path: Path, owner: Path, why: str, stale_before: float | None = None) -> Garbage:
    return Garbage(kind, path.relative_to(root).as_posix(), path, owner, size_of(path), why, stale_before)


# ---------------------------------------------------------------------------- on disk


def newest_change(path: Path) -> float:
    """The newest modification time of `path` and of everything under it (symlinks not followed)."""
    try:
        newest = path.lstat().st_mtime
        entries = list(os.scandir(path))
    except OSError:
        return 0.0  # removed meanwhile
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                newest = max(newest, newest_change(Path(entry.path)))
            else:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            continue
    return newest


def size_of(path: Path) -> int:
    """Bytes of the files under `path` (a symlink counts as itself, never followed)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    total += size_of(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass  # removed meanwhile
    return total
