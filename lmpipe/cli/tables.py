"""The plain-text tables the command line prints."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, a dashed rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def summary_table(registration_dirs: list[str]) -> str:
    """What `lmpipe run` ends with: each registered version, and where to review it."""
    rows = [json.loads((Path(d) / "registration.json").read_text()) for d in registration_dirs]
    header = ("model", "version", "alias", "base perplexity", "perplexity", "MLflow run")
    body = [
        (
            r["model_name"],
            str(r["version"]),
            r.get("alias", "none"),
            _number(r["base_perplexity"]),
            _number(r["perplexity"]),
            r["run_id"],
        )
        for r in rows
    ]
    out = [text_table(header, body)]
    if rows:
        uri = rows[0]["tracking_uri"]
        out += [
            "",
            "Review the models in MLflow:",
            f"  mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"  open {uri}",
        ]
    return "\n".join(out)


def models_table(rows: list[dict[str, Any]]) -> str:
    """`lmpipe models`: one row per model version; columns starting with '_' are not shown."""
    if not rows:
        return "no registered model versions"
    columns = [c for c in rows[0] if not c.startswith("_")]
    return text_table(columns, [[str(row[c]) for c in columns] for row in rows])


def _number(value: float) -> str:
    return f"{value:,.2f}" if math.isfinite(value) else str(value)


def verify_table(checks: Sequence[Any]) -> str:
    """`lmpipe verify`: one row per artifact (lmpipe.store.audit.ArtifactCheck)."""
    rows = [
        (c.stage, c.key, str(c.files), f"{c.bytes / 1e6:,.1f}", "ok" if c.problem is None else f"CORRUPT: {c.problem}")
        for c in checks
    ]
    return text_table(("stage", "artifact", "files", "MB", "result"), rows)


def gc_table(freed: Sequence[Any]) -> str:
    """`lmpipe gc`: one row per directory it frees (lmpipe.store.gc.Garbage)."""
    if not freed:
        return "nothing to free"
    rows = [(g.kind, g.ref, f"{g.bytes / 1e6:,.1f}", g.why) for g in freed]
    return text_table(("kind", "where", "MB", "why"), rows)
