"""Remove what lmpipe.store.gc planned, each directory under its artifact's lock, taken without waiting.

A lock someone holds means a live build (or training) owns the directory: it is skipped and reported,
never waited for. Under the lock, an artifact or checkpoint is checked again (a run may have used it
since the plan was made), then made invisible at once, by renaming it to `.<key>.discarded-<8hex>`
beside itself (one atomic rename: a lookup sees the whole artifact or none), and only then removed. A
gc killed mid-removal leaves a discarded directory, which the next gc, or the next build of that key,
removes.

What no lock covers: a cache lookup takes no lock, so a run that looks an artifact up in the instant
between the check and the rename gets a reference that is then removed; its next stage fails on the
missing files and the next run rebuilds it. With the default --older-than that needs an artifact left
unused for a week to be looked up in that instant.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field

from lmpipe.store.gc import Garbage, Plan, newest_change
from lmpipe.store.locks import try_exclusive
from lmpipe.store.usage import last_used


@dataclass
class Sweep:
    freed: list[Garbage] = field(default_factory=list)  # removed, or under a dry run, would be
    in_use: list[Garbage] = field(default_factory=list)  # a run holds its lock: left alone
    used_meanwhile: list[Garbage] = field(default_factory=list)  # used again since the plan: kept


def still_garbage(item: Garbage) -> bool:
    """Checked again under the lock: still there, and (artifacts, checkpoints) not used since the plan."""
    if not item.path.is_dir() or item.path.is_symlink():
        return False
    if item.stale_before is None:
        return True
    touched = last_used(item.path) if item.kind == "artifact" else newest_change(item.path)
    return touched is not None and touched < item.stale_before


def sweep(planned: Plan, dry_run: bool = False) -> Sweep:
    """Remove each planned directory whose lock is free (under a dry run, only say which would go)."""
    result = Sweep()
    for item in planned.garbage:
        with try_exclusive(item.owner, create=not dry_run) as free:
            if not free:
                result.in_use.append(item)
            elif not still_garbage(item):
                if item.path.is_dir():
                    result.used_meanwhile.append(item)
            else:
                if not dry_run:
                    remove(item)
                result.freed.append(item)
    return result


def remove(item: Garbage) -> None:
    """Call holding the owner's lock. A published artifact or checkpoint disappears in one rename first."""
    doomed = item.path
    if item.kind in ("artifact", "checkpoint"):
        doomed = item.path.with_name(f".{item.path.name}.discarded-{uuid.uuid4().hex[:8]}")
        item.path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)  # never follows a symlink: one inside is removed as a link
