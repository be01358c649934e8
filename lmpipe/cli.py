"""Command line: run any flow from a YAML config with dotted overrides.

lmpipe run both --config configs/default.yaml --set train.epochs=2 --set data.block_size=64
lmpipe config --config configs/default.yaml --set train.learning_rate=5e-4   # print the resolved config
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# No network here, and no phoning home in local runs: set before prefect/mlflow/HF are imported.
OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # progress is logged by the tasks instead
    "TOKENIZERS_PARALLELISM": "false",  # tokenize parallelises with processes; threads would oversubscribe
}

FLOWS = {"clm": "flows.clm:clm_flow", "mlm": "flows.mlm:mlm_flow", "both": "flows.both:both_flow"}


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def load_flow(name: str):
    module_name, attribute = FLOWS[name].split(":")
    module = __import__(module_name, fromlist=[attribute])
    return getattr(module, attribute)


def summary_table(registration_dirs: list[str]) -> str:
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


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, a dashed rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _number(value: float) -> str:
    return f"{value:,.2f}" if math.isfinite(value) else str(value)


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    parser = argparse.ArgumentParser(
        prog="lmpipe", description="Train and register language models with Prefect and MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a flow")
    run.add_argument("flow", nargs="?", default="both", choices=sorted(FLOWS), help="which flow (default: both)")
    show = commands.add_parser("config", help="print the resolved config as JSON")
    pool = commands.add_parser("pool", help="manage Prefect work pools from deployments/*.yaml")
    pool.add_argument("action", choices=["create"], help="create or update the pools")
    pool.add_argument("files", nargs="+", help="work pool files, e.g. deployments/cpu-process.yaml")
    models = commands.add_parser("models", help="table of registered model versions, newest first")
    models.add_argument("--name", default=None, help="only this registered model")
    predict = commands.add_parser("predict", help="run a registered model on some text")
    predict.add_argument("name", help="registered model name, e.g. eli5-mlm")
    predict.add_argument("text", help="prompt (CLM) or a sentence with the tokenizer's mask token (MLM)")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, default=None, help="model version (default: champion, else newest)")
    which.add_argument("--alias", default=None, help="model alias, e.g. champion")
    predict.add_argument("--top-k", type=int, default=3, help="fill-mask predictions to show")
    predict.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate")
    for sub in (models, predict):
        sub.add_argument(
            "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)"
        )
    show.add_argument("--reference", action="store_true", help="print the markdown config reference instead")
    for sub in (run, show):
        sub.add_argument("--config", "-c", default=None, help="YAML config file (default: built-in defaults)")
        sub.add_argument(
            "--set",
            "-s",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="dotted override, e.g. --set train.epochs=2 (repeatable)",
        )
    args = parser.parse_args(argv)
    if args.command == "config" and args.reference:
        from lmpipe.config_reference import markdown_reference

        print(markdown_reference())
        return 0

    from lmpipe.config import ConfigError
    from lmpipe.config_loading import load_config

    if args.command == "pool":
        return create_pools(args.files)
    if args.command in ("models", "predict"):
        return registry_command(args)

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"lmpipe: {error}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        return 0

    flow = load_flow(args.flow)
    try:
        registrations = flow(config)
    except Exception as error:  # noqa: BLE001 - report any failure as one line; Prefect logged the traceback
        print(f"\nlmpipe: {args.flow} flow failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print("\n" + summary_table(registrations))
    return 0


def registry_command(args: argparse.Namespace) -> int:
    from lmpipe import registry_commands
    from lmpipe.config import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if args.command == "models":
        print(registry_commands.models_table(registry_commands.version_rows(uri, args.name)))
        return 0
    model = registry_commands.model_uri(args.name, args.version, args.alias, uri)
    for row in registry_commands.predict(model, args.text, uri, args.top_k, args.max_new_tokens):
        print("  ".join(f"{key}: {value}" for key, value in row.items()))
    return 0


def create_pools(files: list[str]) -> int:
    import asyncio

    from lmpipe.config import ConfigError
    from lmpipe.work_pools import create_or_update_pool, load_pool_spec

    try:
        specs = [load_pool_spec(f) for f in files]
    except ConfigError as error:
        print(f"lmpipe: {error}", file=sys.stderr)
        return 2
    for spec in specs:
        print(asyncio.run(create_or_update_pool(spec)))
    return 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
