"""Is the registry ready for this run? Checked by the pre-flight, before any stage runs.

- A SQLite store is created whole or not at all: MLflow builds its schema in a scratch file beside
  it, which is renamed into place. A kill during MLflow's schema creation (which, run inside
  register, used to leave a store that failed every later run with "table mcp_servers already
  exists") can then only leave a scratch file, removed by the next run. An older schema is
  migrated the same way, on a copy.
- A store left half-created by something else is recognised, with the line that says how to recover.
- A tracking server must answer within seconds, and MLflow's HTTP retries are bounded, so a dead
  server is one line in seconds, never minutes of backoff.
- The experiment must be active (created here when missing); the registered-model names are
  checked by the config schema.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmpipe.errors import PreflightFailed

FIELD = "registry.tracking_uri"
REACHABLE_WITHIN_S = 5.0
# MLflow's defaults (7 retries, backoff factor 2, 120 s per request) spend 13 minutes on a dead server
# over a task's three attempts. These keep one call under ~15 s; a user's own settings win.
BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
SCRATCH_INFIX = ".creating-"


def bound_http_retries() -> None:
    """MLflow's HTTP retries, bounded in total time in this process (unless the user set them)."""
    for name, value in BOUNDED_HTTP.items():
        os.environ.setdefault(name, value)


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")).expanduser().resolve() if uri.startswith("sqlite:///") else None


# ---------------------------------------------------------------------------- SQLite stores


@contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """One process at a time prepares a store (two runs starting together on a new one, say)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f".{db.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def prepare_sqlite_store(db: Path) -> str:
    """Create or migrate the store at `db`, atomically; 'created', 'migrated' or 'ready'."""
    with _store_lock(db):
        for leftover in db.parent.glob(f".{db.name}{SCRATCH_INFIX}*"):
            leftover.unlink(missing_ok=True)  # a killed creation's scratch file: we hold the lock
        if not db.exists() or db.stat().st_size == 0:
            _build_in_scratch(db, copy_from=None)
            return "created"
        revision, head = _schema_revision(db), _head_revision()
        if revision == head:
            return "ready"
        if revision is None:
            raise PreflightFailed(_half_created(db, "it has tables but no schema revision"))
        _build_in_scratch(db, copy_from=db)
        return "migrated"


def _build_in_scratch(db: Path, copy_from: Path | None) -> None:
    """Let MLflow create (or migrate a copy of) the schema in a scratch file, then rename it to `db`."""
    scratch = db.with_name(f".{db.name}{SCRATCH_INFIX}{os.getpid()}")
    try:
        if copy_from is not None:
            with sqlite3.connect(copy_from) as source, sqlite3.connect(scratch) as target:
                source.backup(target)  # a consistent copy, even while a reader has the store open
        try:
            _let_mlflow_build(scratch)
        except Exception as error:  # noqa: BLE001 - any failure of MLflow's migration says the same
            if copy_from is None:
                raise
            raise PreflightFailed(_half_created(db, f"migrating it failed: {_first_line(error)}")) from error
        os.replace(scratch, db)  # atomic: the store is whole, or it is the one that was there
    finally:
        scratch.unlink(missing_ok=True)


def _let_mlflow_build(db: Path) -> None:
    from mlflow.store.db.utils import _all_tables_exist, _initialize_tables, _upgrade_db, create_sqlalchemy_engine

    quiet = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)  # MLflow's migrations print a line each
    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    try:
        if _all_tables_exist(engine):
            _upgrade_db(engine)
        else:
            _initialize_tables(engine)
    finally:
        engine.dispose()
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _schema_revision(db: Path) -> str | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
        if "alembic_version" not in tables:
            return None
        row = connection.execute("select version_num from alembic_version").fetchone()
    return row[0] if row else None


@functools.cache
def _head_revision() -> str:
    """The schema revision this MLflow expects, read from its migration scripts without importing MLflow
    (2 s of a cached run's pre-flight otherwise): the one revision no other script names as its parent."""
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations, "MLflow is not installed"
    versions = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    revisions, parents = set(), set()
    for script in versions.glob("*.py"):
        text = script.read_text()
        revision = re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.MULTILINE)
        parent = re.search(r"^down_revision\s*=\s*(.+)$", text, re.MULTILINE)
        if revision:
            revisions.add(revision.group(1))
        if parent:
            parents.update(re.findall(r"['\"](\w+)['\"]", parent.group(1)))
    heads = revisions - parents
    if len(heads) != 1:  # never seen; MLflow itself would refuse such a script directory
        from mlflow.store.db.utils import _get_latest_schema_revision

        return _get_latest_schema_revision()
    return heads.pop()


def _holds_nothing(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            counts = [connection.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "model_versions")]
    except sqlite3.Error:
        return True  # not even those tables: nothing was ever recorded in it
    return sum(counts) == 0


def _half_created(db: Path, detail: str) -> str:
    if _holds_nothing(db):
        recovery = f"it holds no runs or model versions, so delete it (rm '{db}') and run again"
    else:
        recovery = (
            f"it holds runs or models: move it aside and run again, or restore it from a backup "
            f"(`mlflow db upgrade sqlite:///{db}` on a copy may repair it)"
        )
    return f"{FIELD}: the MLflow store '{db}' was left half-created or half-migrated ({detail}); {recovery}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# ---------------------------------------------------------------------------- tracking servers


def require_server_answers(uri: str, timeout_s: float = REACHABLE_WITHIN_S) -> None:
    """Any HTTP answer from an http(s) tracking server within `timeout_s`, asking again every half second
    (a reset or refused connection may be a server restarting); else one line naming the field."""
    import httpx

    from lmpipe.registry.secrets import mask_url

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            remaining = max(deadline - time.monotonic(), 0.5)
            httpx.get(f"{uri.rstrip('/')}/health", timeout=remaining, follow_redirects=True)
            return
        except httpx.HTTPError as error:
            if time.monotonic() + 0.5 < deadline:
                time.sleep(0.5)
                continue
            reason = _first_line(error) or type(error).__name__
            raise PreflightFailed(
                f"{FIELD}: no MLflow tracking server answers at {mask_url(uri)} within {timeout_s:g} s ({reason}); "
                "start it (`make serve`, or `mlflow server`) or point registry.tracking_uri at one that runs"
            ) from None


# ---------------------------------------------------------------------------- the experiment


def require_active_experiment(name: str, uri: str) -> None:
    """The experiment exists (created when missing) and is active; one line naming the field when it was
    deleted. In a SQLite store, an existing experiment is read without importing MLflow."""
    db = sqlite_path(uri)
    if db is not None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            found = connection.execute(
                "select experiment_id, lifecycle_stage from experiments where name = ?", (name,)
            ).fetchone()
        if found is not None:
            _require_active(name, str(found[0]), found[1])
            return
    from mlflow import MlflowClient

    from lmpipe.registry.tracking import experiment_id_for

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        _require_active(name, experiment.experiment_id, experiment.lifecycle_stage)
    experiment_id_for(client, name, uri)


def _require_active(name: str, experiment_id: str, lifecycle_stage: str) -> None:
    if lifecycle_stage == "deleted":
        raise PreflightFailed(
            f"registry.experiment={name!r} was deleted in MLflow (experiment id {experiment_id}); restore "
            f"it (`mlflow experiments restore --experiment-id {experiment_id}`) or name another experiment"
        )


def check_registry(uri: str, experiment: str, log: logging.Logger | logging.LoggerAdapter) -> None:
    """The registry this run will register in is ready: store, server and experiment."""
    from lmpipe.registry.secrets import mask_url

    started = time.monotonic()
    bound_http_retries()
    db = sqlite_path(uri)
    if db is not None:
        state = prepare_sqlite_store(db)
        if state != "ready":
            log.info(f"pre-flight: MLflow store {db} {state}")
    elif uri.startswith(("http://", "https://")):
        require_server_answers(uri)
    try:
        require_active_experiment(experiment, uri)
    except PreflightFailed:
        raise
    except Exception as error:  # noqa: BLE001 - whatever MLflow raised, the user needs the field and the reason
        raise PreflightFailed(f"{FIELD}: MLflow at {mask_url(uri)} failed: {_first_line(error)}") from error
    log.debug(f"pre-flight: registry {mask_url(uri)} ready in {time.monotonic() - started:.1f} s")
