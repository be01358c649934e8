"""The registry's pre-flight: SQLite stores created whole or not at all, migrated on a copy, a broken one
named with its recovery; a dead server and a deleted experiment found in seconds."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lmpipe.errors import PreflightFailed
from lmpipe.registry.readiness import (
    BOUNDED_HTTP,
    bound_http_retries,
    check_registry,
    prepare_sqlite_store,
    require_server_answers,
)

OLDER_REVISION = "89d4b8295536"  # an MLflow 2.x schema, several migrations behind this MLflow's
BEFORE_MCP_SERVERS = "b7e4c1a90f23"  # the revision before the one that creates mcp_servers


def revision_of(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("select version_num from alembic_version").fetchone()[0]


def head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def test_a_new_store_is_created_once_and_then_ready(tmp_path):
    db = tmp_path / "stores" / "mlflow.db"
    assert prepare_sqlite_store(db) == "created"
    assert revision_of(db) == head()
    assert prepare_sqlite_store(db) == "ready"
    assert [e.name for e in MlflowClient(f"sqlite:///{db}").search_experiments()] == ["Default"]
    assert sorted(p.name for p in db.parent.iterdir()) == [".mlflow.db.lock", "mlflow.db"]


def test_a_kill_during_creation_leaves_no_store_and_the_next_run_creates_it(tmp_path):
    db = tmp_path / "mlflow.db"
    code = f"import pathlib, lmpipe.registry.readiness as r; r.prepare_sqlite_store(pathlib.Path({str(db)!r}))"
    creating = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".mlflow.db.creating-*")):
        assert creating.poll() is None, "creation finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.2)  # inside MLflow's schema creation
    creating.send_signal(signal.SIGKILL)
    creating.wait(timeout=30)
    assert creating.returncode == -signal.SIGKILL
    assert not db.exists(), "a half-created store was put in place"

    assert prepare_sqlite_store(db) == "created"
    assert revision_of(db) == head()
    assert not list(tmp_path.glob(".mlflow.db.creating-*")), "the killed creation's scratch file is removed"


def test_an_older_store_is_migrated_on_a_copy_and_keeps_its_data(tmp_path):
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase  # MLflow's first schema

    db = tmp_path / "mlflow.db"
    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "insert into experiments (name, artifact_location, lifecycle_stage) values ('old-team', '/x', 'active')"
        )
    command.upgrade(_get_alembic_config(f"sqlite:///{db}"), OLDER_REVISION)
    engine.dispose()
    assert revision_of(db) == OLDER_REVISION

    assert prepare_sqlite_store(db) == "migrated"
    assert revision_of(db) == head()
    assert MlflowClient(f"sqlite:///{db}").get_experiment_by_name("old-team") is not None


def half_migrated(db: Path) -> None:
    MlflowClient(f"sqlite:///{db}").search_experiments()
    with sqlite3.connect(db) as connection:
        connection.execute(f"update alembic_version set version_num = '{BEFORE_MCP_SERVERS}'")


def test_a_half_migrated_store_is_named_with_how_to_recover_and_left_untouched(tmp_path):
    db = tmp_path / "mlflow.db"
    half_migrated(db)
    before = db.read_bytes()
    with pytest.raises(PreflightFailed) as caught:
        prepare_sqlite_store(db)
    message = str(caught.value)
    assert message.startswith(f"registry.tracking_uri: the MLflow store '{db}' was left half-created or half-migrated")
    assert "table mcp_servers already exists" in message
    assert message.endswith(f"it holds no runs or model versions, so delete it (rm '{db}') and run again")
    assert "\n" not in message
    assert db.read_bytes() == before, "a store we could not migrate is never changed"
    assert not list(tmp_path.glob(".mlflow.db.creating-*"))


def test_a_half_migrated_store_with_runs_is_never_suggested_for_deletion(tmp_path):
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    client.create_run(client.create_experiment("work"))
    half_migrated(db)
    with pytest.raises(PreflightFailed, match="it holds runs or models: move it aside") as caught:
        prepare_sqlite_store(db)
    assert "rm '" not in str(caught.value)


def test_a_dead_tracking_server_is_one_line_in_seconds():
    started = time.monotonic()
    with pytest.raises(PreflightFailed) as caught:
        require_server_answers("http://user:secret@127.0.0.1:1")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith("registry.tracking_uri: no MLflow tracking server answers at http://***@127.0.0.1:1")
    assert "secret" not in message


def test_a_deleted_experiment_is_named_with_how_to_restore_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_sqlite_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("retired")
    client.delete_experiment(experiment_id)
    with pytest.raises(PreflightFailed) as caught:
        check_registry(uri, "retired", logging.getLogger("test"))
    assert str(caught.value) == (
        f"registry.experiment='retired' was deleted in MLflow (experiment id {experiment_id}); restore it "
        f"(`mlflow experiments restore --experiment-id {experiment_id}`) or name another experiment"
    )


def test_a_missing_experiment_is_created_by_the_preflight(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    check_registry(uri, "new-team", logging.getLogger("test"))
    experiment = MlflowClient(uri).get_experiment_by_name("new-team")
    assert experiment.lifecycle_stage == "active"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()  # beside the store, absolute


def test_http_retries_are_bounded_unless_the_user_chose(monkeypatch):
    for name in BOUNDED_HTTP:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "600")
    bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "600"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == BOUNDED_HTTP["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
