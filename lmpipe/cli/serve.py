"""`make serve`: everything a user needs to see the pipeline, on loopback, in one command.

Starts a Prefect server and an MLflow server (SQLite registry in the project folder), creates
the work pools from deployments/, deploys every flow from prefect.yaml, and starts a `cpu`
worker. Prints the two URLs; Ctrl-C stops all of it.

    make serve                                   # Prefect UI :4200, MLflow UI :5000
    PREFECT_PORT=4300 MLFLOW_PORT=5100 make serve
    python -m lmpipe.cli.serve --prefect-home /tmp/ph --mlflow-dir /tmp/ml --prefect-port 4300
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from lmpipe.cli.services import (
    PROJECT_ROOT,
    create_pools_and_deploy,
    prefect_env,
    start_mlflow_server,
    start_prefect_server,
    start_worker,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lmpipe.cli.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--prefect-port", type=int, default=int(os.environ.get("PREFECT_PORT", "4200")))
    parser.add_argument("--mlflow-port", type=int, default=int(os.environ.get("MLFLOW_PORT", "5000")))
    default_home = Path(os.environ.get("PREFECT_HOME", PROJECT_ROOT / ".prefect"))
    parser.add_argument("--prefect-home", type=Path, default=default_home)
    parser.add_argument(
        "--mlflow-dir",
        type=Path,
        default=PROJECT_ROOT,
        help="folder holding mlflow.db and mlartifacts/ (default: the project, as `make run`)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = args.prefect_home / "serve-logs"
    env = prefect_env(args.prefect_home, args.prefect_port)
    mlflow_url = f"http://127.0.0.1:{args.mlflow_port}"
    # Flow runs register through the MLflow server, which keeps the same SQLite registry `make run` uses.
    worker_env = {**env, "MLFLOW_TRACKING_URI": mlflow_url}

    services = []
    try:
        print(f"starting Prefect server on :{args.prefect_port} and MLflow on :{args.mlflow_port} (logs: {log_dir})")
        services.append(start_prefect_server(args.prefect_home, args.prefect_port, log_dir))
        services.append(
            start_mlflow_server(
                f"sqlite:///{args.mlflow_dir.resolve() / 'mlflow.db'}",
                args.mlflow_dir / "mlartifacts",
                args.mlflow_port,
                log_dir,
            )
        )
        print("creating work pools and deploying every flow in prefect.yaml", flush=True)
        create_pools_and_deploy(env, log_dir)
        services.append(start_worker("cpu", worker_env, log_dir))
        (log_dir / "pids").write_text("\n".join(f"{s.name} {s.process.pid}" for s in services) + "\n")

        stop = threading.Event()  # Ctrl-C from here on is a clean stop, not a traceback
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(
            f"\n  Prefect UI: http://127.0.0.1:{args.prefect_port}   (Deployments -> both-cpu -> Run -> Custom run)"
            f"\n  MLflow UI:  {mlflow_url}   (Models -> eli5-clm / eli5-mlm)"
            "\n\nA `cpu` worker is running. Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while not stop.wait(2):
            for service in services:
                if service.process.poll() is not None:
                    print(f"{service.name} stopped unexpectedly:\n{service.log_tail()}", file=sys.stderr)
                    return 1
        return 0
    except KeyboardInterrupt:  # Ctrl-C while starting up
        return 130
    finally:
        print("\nstopping worker, MLflow and Prefect ...", flush=True)
        for service in reversed(services):
            service.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
