"""Command line: run any flow from a YAML config with dotted overrides, and review registered models.

lmpipe run both --config configs/default.yaml --set train.epochs=2 --set data.block_size=64
lmpipe config --config configs/default.yaml --set train.learning_rate=5e-4   # print the resolved config
lmpipe models                                                                # registered versions
lmpipe predict eli5-mlm "Return the <mask> of the file."
lmpipe verify tokenize --config configs/default.yaml                         # checksum every artifact byte
lmpipe gc --dry-run --older-than 30 --config configs/default.yaml            # what no registered model needs
lmpipe review eli5-clm 3 --approve --note "better on our prompts"            # answer a waiting review
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys

from lmpipe.cli.console import one_line_console_logs
from lmpipe.cli.gc_command import collect_garbage, days
from lmpipe.cli.offline import apply_offline_defaults
from lmpipe.cli.tables import models_table, summary_table, verify_table
from lmpipe.errors import ConfigError, TemporaryServerFailed

# Flows by name, as prefect.yaml names their entry points; imported only when one runs.
FLOWS = {"clm": "flows.clm:clm_flow", "mlm": "flows.mlm:mlm_flow", "both": "flows.both:both_flow"}


def load_flow(name: str):
    module_name, attribute = FLOWS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmpipe", description="Train and register language models with Prefect and MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a flow")
    run.add_argument("flow", nargs="?", default="both", choices=sorted(FLOWS), help="which flow (default: both)")
    run.add_argument(
        "--verbose", "-v", action="store_true", help="show tracebacks in the terminal (always in the Prefect log)"
    )
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
    review = commands.add_parser(
        "review", help="approve or reject a version waiting for review (registry.approval=reviewer)"
    )
    review.add_argument("name", help="registered model name, e.g. eli5-clm")
    review.add_argument("version", type=int, help="the version waiting for review")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true", help="make it champion")
    verdict.add_argument("--reject", action="store_true", help="leave the aliases as they are")
    review.add_argument("--note", default="", help="why; kept on the version and its card")
    review.add_argument(
        "--wait", type=float, default=120.0, metavar="SECONDS", help="wait this long for the run to apply it"
    )
    for sub in (models, predict, review):
        sub.add_argument(
            "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)"
        )
    verify = commands.add_parser(
        "verify", help="check every byte of the artifacts under artifacts.root against their manifests"
    )
    verify.add_argument(
        "stage", nargs="?", default=None, help="only this stage's artifacts, e.g. tokenize (default: all)"
    )
    gc_about = (
        "delete artifacts no registered model version needs and no run used lately, old checkpoints, "
        "and what killed builds left"
    )
    gc = commands.add_parser("gc", help=gc_about, description=gc_about[0].upper() + gc_about[1:] + ".")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    gc.add_argument(
        "--older-than",
        type=days,
        default=7.0,
        metavar="DAYS",
        help="keep artifacts a run used, and checkpoints written, within this many days (default: 7)",
    )
    show.add_argument("--reference", action="store_true", help="print the markdown config reference instead")
    for sub in (run, show, verify, gc):
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
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    args = parser().parse_args(argv)
    if args.command == "config" and args.reference:
        from lmpipe.config.reference import markdown_reference

        print(markdown_reference())
        return 0
    if args.command == "pool":
        return create_pools(args.files)
    if args.command in ("models", "predict", "review"):
        return registry_command(args)

    from lmpipe.config.loading import load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"lmpipe: {error}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        return 0
    if args.command == "verify":
        return verify_artifacts(config.artifacts.root, args.stage)
    if args.command == "gc":
        return collect_garbage(config, args.older_than, args.dry_run)
    return run_flow(args.flow, config, verbose=args.verbose)


class Terminated(BaseException):
    """SIGTERM to `lmpipe run`, raised in its main thread like KeyboardInterrupt is for SIGINT."""


def raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated()


def run_flow(name: str, config, verbose: bool = False) -> int:
    """Run flow `name` on `config` here, printing the registrations, or one line saying why it failed
    (the last line on stderr; tracebacks go to the Prefect log, and to the terminal when `verbose`)."""
    from lmpipe.orchestration.temporary_server import (
        TemporaryServer,
        connected_to,
        needs_temporary_server,
        startup_timeout_s,
    )

    server = None
    # Prefect's flow engine turns a SIGTERM into a crashed flow run, then re-sends it to the handler it
    # found: this one, so that the command still stops its server and ends with one line.
    previous_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        timeout_s = startup_timeout_s()
        # Started first: Prefect's temporary server boots on another core while the flow's modules import.
        server = TemporaryServer.spawn() if needs_temporary_server() else None
        if not verbose:
            one_line_console_logs()
        flow = load_flow(name)
        with connected_to(server, timeout_s):
            registrations = flow(config)
    except ConfigError as error:
        return fail(str(error), 2)
    except TemporaryServerFailed as error:
        return fail(str(error), 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Terminated:
        return fail("terminated", 143)
    except BaseException as error:  # noqa: BLE001 - any failure is one line; Prefect logged the traceback
        if isinstance(error, SystemExit):
            raise
        return fail(f"{name} flow failed: {type(error).__name__}: {error}", 1)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if server is not None:
            server.stop()
    print("\n" + summary_table(registrations))
    return 0


def fail(message: str, code: int) -> int:
    """The last line a failed command prints: its first line only (the details are in the Prefect log)."""
    lines = message.strip().splitlines() or ["failed"]
    print(f"\nlmpipe: {lines[0]}" + (" (more in the Prefect log)" if len(lines) > 1 else ""), file=sys.stderr)
    return code


def run_from_script(name: str) -> None:
    """`python flows/<name>.py --config ... --set ...`: the same as `lmpipe run <name> ...`."""
    sys.exit(main(["run", name, *sys.argv[1:]]))


def registry_command(args: argparse.Namespace) -> int:
    from lmpipe.registry import review
    from lmpipe.registry.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if args.command == "review":
        from lmpipe.cli.review_command import review_command

        return review_command(uri, args.name, args.version, args.approve, args.note, args.wait)
    if args.command == "models":
        print(models_table(review.version_rows(uri, args.name)))
        return 0
    model = review.model_uri(args.name, args.version, args.alias, uri)
    for row in review.predict(model, args.text, uri, args.top_k, args.max_new_tokens):
        print("  ".join(f"{key}: {value}" for key, value in row.items()))
    return 0


def verify_artifacts(root: str, stage: str | None) -> int:
    """Exit 0 when every artifact checks, 1 when any is corrupt (each withdrawn), 2 for a root or stage not there."""
    from pathlib import Path

    from lmpipe.store.audit import check_root

    where = Path(root).expanduser().resolve()
    if not (where / stage if stage else where).is_dir():
        print(
            f"lmpipe: artifacts.root: no {'stage ' + repr(stage) + ' under ' if stage else ''}{where}", file=sys.stderr
        )
        return 2
    checks = check_root(where, stage)
    print(verify_table(checks))
    bad = [c for c in checks if c.problem]
    total = sum(c.bytes for c in checks)
    print(
        f"\n{len(checks)} artifacts, {total / 1e9:.2f} GB read: {len(bad)} corrupt"
        + (" (withdrawn; the next run rebuilds them)" if bad else "")
    )
    return 1 if bad else 0


def create_pools(files: list[str]) -> int:
    import asyncio

    from lmpipe.orchestration.work_pools import create_or_update_pool, load_pool_spec

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
