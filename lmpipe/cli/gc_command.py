"""`lmpipe gc`: remove what no registered version needs and no recent run used (lmpipe.store.gc decides,
lmpipe.store.sweep removes), and print what it freed."""

from __future__ import annotations

import argparse
import math
import sys

from lmpipe.cli.tables import gc_table
from lmpipe.registry.inventory import registered_versions


def days(text: str) -> float:
    """--older-than: a number of days, 0 or more (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days, 0 or more, got {text!r}")
    return value


def collect_garbage(config, older_than_days: float, dry_run: bool) -> int:
    """Exit 0 once what is garbage is removed (or listed, under a dry run), whatever a run held; 2, deleting
    nothing, for a root not there or a registry that cannot be read."""
    from collections import Counter
    from pathlib import Path

    from lmpipe.registry.identity import registered_name, tracking_uri
    from lmpipe.registry.secrets import mask_url
    from lmpipe.store import gc
    from lmpipe.store.sweep import sweep

    root = Path(config.artifacts.root).expanduser().resolve()
    if not root.is_dir():
        print(f"lmpipe: artifacts.root: no {root}", file=sys.stderr)
        return 2
    uri = tracking_uri(config)
    names = {registered_name(config, "clm"), registered_name(config, "mlm")} | gc.registered_names(root)
    try:
        versions = registered_versions(uri, names)
    except Exception as error:  # noqa: BLE001 - whatever MLflow raised, gc cannot tell what versions need
        return refuse(f"cannot read the model registry at {mask_url(uri)} ({_first_line(error)})")
    try:
        planned = gc.plan(root, gc.Registry(mask_url(uri), versions), older_than_days * gc.DAY_S)
    except gc.UnreadableRegistry as error:
        return refuse(f"the model registry at {mask_url(uri)}: {error}")
    swept = sweep(planned, dry_run)
    print(gc_table(swept.freed))
    total = sum(item.bytes for item in swept.freed)
    print(f"\n{'would free' if dry_run else 'freed'} {total / 1e6:,.1f} MB in {len(swept.freed)} directories")
    for item in swept.in_use:
        print(f"in use, left alone: {item.ref} (a run holds its lock)")
    for item in swept.used_meanwhile:
        print(f"used while gc ran, kept: {item.ref}")
    unchecked = ", ".join(f"{n} {why}" for why, n in Counter(planned.unchecked).items())
    print(
        f"kept {planned.needed} artifacts needed by {planned.versions} registered versions, "
        f"{planned.recent} used recently (within {older_than_days:g} days)"
        + (f", and the chains of registrations gc cannot check ({unchecked})" if unchecked else "")
    )
    return 0


def refuse(reason: str) -> int:
    print(f"lmpipe: gc: {reason}; nothing was deleted", file=sys.stderr)
    return 2


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
