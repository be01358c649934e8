"""`lmpipe gc`: what no registered version needs and no run used lately goes, each directory under its lock;
what a version or a live build needs stays; a dry run or a registry that cannot be read changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from lmpipe.cli.main import main
from lmpipe.store import sweep as sweep_module
from lmpipe.store.gc import DAY_S, Registry, UnreadableRegistry, plan
from lmpipe.store.locks import exclusive
from lmpipe.store.manifest import MANIFEST, write_manifest
from lmpipe.store.sweep import sweep
from lmpipe.store.usage import last_used, mark_used

URI = "sqlite:////registry/mlflow.db"  # what registration.json records; the pure tests never open it
OLD = 30.0  # days: older than any --older-than these tests use


def artifact(root: Path, ref: str, inputs: dict, age_days: float = OLD, registration: dict | None = None) -> Path:
    """A published artifact `ref` holding 1000 bytes, its manifest last touched `age_days` ago."""
    directory = root / ref
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "part.bin").write_bytes(b"x" * 1000)
    if registration is not None:
        (directory / "registration.json").write_text(json.dumps({"tracking_uri": URI, **registration}))
    write_manifest(directory, {"stage": ref.split("/")[0], "inputs": inputs})
    aged(directory / MANIFEST, age_days)
    return directory


def aged(path: Path, days: float) -> None:
    moment = time.time() - days * DAY_S
    os.utime(path, (moment, moment), follow_symlinks=False)


def checkpoint(root: Path, key: str, age_days: float) -> Path:
    directory = root / "checkpoints" / key
    (directory / "checkpoint-5").mkdir(parents=True)
    (directory / "checkpoint-5" / "model.safetensors").write_bytes(b"w" * 500)
    for path in (directory / "checkpoint-5" / "model.safetensors", directory / "checkpoint-5", directory):
        aged(path, age_days)
    return directory


def leftover(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "half.arrow").write_bytes(b"h" * 10)
    return directory


def tree(top: Path) -> list[tuple]:
    """Every entry under `top` with its kind, size and times: equal listings mean nothing changed."""
    found = []
    for path in sorted(top.rglob("*")):
        stat = path.lstat()
        found.append((str(path.relative_to(top)), path.is_symlink(), path.is_dir(), stat.st_size, stat.st_mtime_ns))
    return found


def chain(root: Path, key: str, old_root: str = "/elsewhere/artifacts") -> dict[str, Path]:
    """A whole clm chain keyed `key`, whose manifests name their upstream every way they have: refs, older
    absolute paths under another root, and training's nested job dump."""
    made = {
        "download": artifact(root, f"download/d{key}", {"data": {"source": "builtin"}}),
        "flatten": artifact(root, f"flatten/f{key}", {"upstream": f"download/d{key}", "text_field": "text"}),
    }
    made["tokenize"] = artifact(root, f"tokenize/t{key}", {"upstream": f"{old_root}/flatten/f{key}"})
    made["group"] = artifact(root, f"group/g{key}", {"upstream": f"tokenize/t{key}", "block_size": 32})
    job = {
        "objective": "clm",
        "blocks_dir": f"{old_root}/group/g{key}",
        "tokenizer_dir": f"{old_root}/tokenize/t{key}/tokenizer",
        "checkpoint_dir": f"{old_root}/checkpoints/c{key}",
        "train": {"learning_rate": 0.001},
    }
    made["train"] = artifact(root, f"train-clm/m{key}", job)
    made["evaluate"] = artifact(root, f"evaluate-clm/e{key}", {"model": f"train-clm/m{key}", "blocks": f"group/g{key}"})
    return made


def registered(root: Path, key: str, name: str, version: int, **extra) -> Path:
    inputs = {"model": f"train-clm/m{key}", "eval": f"evaluate-clm/e{key}"}
    return artifact(
        root, f"register-clm/r{key}", inputs, registration={"model_name": name, "version": version, **extra}
    )


def refs(items) -> set[str]:
    return {item.ref for item in items}


# ---------------------------------------------------------------------------- what is needed


def test_a_registered_versions_chain_is_kept_through_refs_and_absolute_paths(tmp_path):
    root = tmp_path / "artifacts"
    kept = chain(root, "1")
    registered(root, "1", "eli5-clm", 1)
    junk = chain(root, "2")  # trained, never registered
    planned = plan(root, Registry(URI, {"eli5-clm": {1: {}}}), 7 * DAY_S)
    assert refs(planned.garbage) == {f"{d.parent.name}/{d.name}" for d in junk.values()}
    assert all(g.kind == "artifact" and g.bytes == 1000 + (g.path / MANIFEST).stat().st_size for g in planned.garbage)
    assert (planned.needed, planned.versions, planned.recent) == (7, 1, 0)
    assert all("no registered version needs it; last used 30.0 days ago" == g.why for g in planned.garbage)
    assert not set(kept.values()) & {g.path for g in planned.garbage}


def test_the_refs_a_version_is_tagged_with_keep_their_chain(tmp_path):
    root = tmp_path / "artifacts"
    chain(root, "1")  # no register artifact: the tag alone names what the version was made from
    tags = {"lmpipe.artifacts": json.dumps(["train-clm/m1", "evaluate-clm/e1", "train-clm/not-here"])}
    planned = plan(root, Registry(URI, {"eli5-clm": {3: tags}}), 7 * DAY_S)
    assert planned.garbage == [] and (planned.needed, planned.versions) == (6, 1)

    with pytest.raises(UnreadableRegistry, match="eli5-clm version 3"):
        plan(root, Registry(URI, {"eli5-clm": {3: {"lmpipe.artifacts": "train-clm/m1"}}}), 7 * DAY_S)


def test_a_deleted_version_frees_its_chain_and_another_registrys_is_kept_unchecked(tmp_path):
    root = tmp_path / "artifacts"
    chain(root, "1")
    registered(root, "1", "eli5-clm", 1)
    chain(root, "2")
    registered(root, "2", "eli5-clm", 1, tracking_uri="https://mlflow.example")
    planned = plan(root, Registry(URI, {"eli5-clm": {}}), 7 * DAY_S)
    assert refs(planned.garbage) == {
        "download/d1", "flatten/f1", "tokenize/t1", "group/g1", "train-clm/m1", "evaluate-clm/e1", "register-clm/r1"
    }  # fmt: skip
    why = {g.ref: g.why for g in planned.garbage}
    assert why["register-clm/r1"].startswith("eli5-clm version 1 is no longer registered; last used 30.0 days ago")
    assert planned.unchecked == ["registered at https://mlflow.example"] and planned.needed == 7


def test_what_a_run_used_lately_is_kept_with_its_upstream(tmp_path):
    root = tmp_path / "artifacts"
    made = chain(root, "1")
    mark_used(made["group"])
    planned = plan(root, Registry(URI, {}), 7 * DAY_S)
    assert refs(planned.garbage) == {"train-clm/m1", "evaluate-clm/e1"}
    assert (planned.needed, planned.versions, planned.recent) == (0, 0, 4)
    # Used an hour ago: kept by --older-than 1, not by 0.01 (14 minutes).
    aged(made["group"] / MANIFEST, 1 / 24)
    assert len(plan(root, Registry(URI, {}), 1 * DAY_S).garbage) == 2
    assert len(plan(root, Registry(URI, {}), 0.01 * DAY_S).garbage) == 6


def test_usage_is_the_manifests_time_and_marking_a_missing_artifact_is_harmless(tmp_path):
    made = artifact(tmp_path, "group/g", {}, age_days=3)
    assert time.time() - last_used(made) == pytest.approx(3 * DAY_S, abs=60)
    mark_used(made)
    assert time.time() - last_used(made) < 60
    mark_used(tmp_path / "group" / "gone")
    assert last_used(tmp_path / "group" / "gone") is None


# ---------------------------------------------------------------------------- removing


def test_a_dry_run_lists_everything_and_changes_nothing(tmp_path):
    root = tmp_path / "artifacts"
    chain(root, "1")
    checkpoint(root, "c1", age_days=OLD)
    leftover(root, "tokenize/.t9.building-0123abcd")
    leftover(root, "group/.g9.discarded-89abcdef")
    before = tree(tmp_path)
    swept = sweep(plan(root, Registry(URI, {}), 7 * DAY_S), dry_run=True)
    assert tree(tmp_path) == before, "a dry run must not even create a lock file"
    assert {g.kind for g in swept.freed} == {"artifact", "checkpoint", "scratch", "discarded"}
    assert len(swept.freed) == 9 and swept.in_use == []

    swept = sweep(plan(root, Registry(URI, {}), 7 * DAY_S))
    assert len(swept.freed) == 9
    left = {p.relative_to(root).as_posix() for p in root.rglob("*")}
    assert not {p for p in left if not p.startswith(".locks")} - set(
        ["download", "flatten", "tokenize", "group", "train-clm", "evaluate-clm", "checkpoints"]
    ), left


@contextmanager
def held_elsewhere(directory: Path):
    """The lock of `directory`, held by another thread (another open file: flock treats it as another owner)."""
    taken, release = threading.Event(), threading.Event()

    def hold():
        with exclusive(directory):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(30)
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_a_killed_builds_scratch_goes_but_what_a_live_run_holds_stays(tmp_path):
    root = tmp_path / "artifacts"
    killed = leftover(root, "tokenize/.t1.building-0123abcd")
    live = leftover(root, "tokenize/.t2.building-89abcdef")
    training = checkpoint(root, "c2", age_days=OLD)
    old = artifact(root, "group/g3", {})
    with held_elsewhere(root / "tokenize" / "t2"), held_elsewhere(training), held_elsewhere(old):
        swept = sweep(plan(root, Registry(URI, {}), 7 * DAY_S))
    assert refs(swept.freed) == {"tokenize/.t1.building-0123abcd"} and not killed.exists()
    assert refs(swept.in_use) == {"tokenize/.t2.building-89abcdef", "checkpoints/c2", "group/g3"}
    assert live.is_dir() and training.is_dir() and (old / MANIFEST).is_file()


def test_old_checkpoints_go_and_recent_ones_stay(tmp_path):
    root = tmp_path / "artifacts"
    checkpoint(root, "old", age_days=8)
    fresh = checkpoint(root, "fresh", age_days=8)
    (fresh / "checkpoint-5" / "trainer_state.json").write_text("{}")  # written just now, deep inside
    swept = sweep(plan(root, Registry(URI, {}), 7 * DAY_S))
    assert [(g.ref, g.why) for g in swept.freed] == [("checkpoints/old", "untouched for 8.0 days")]
    assert swept.freed[0].bytes == 500
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["fresh"]


def test_an_artifact_is_made_invisible_in_one_rename_before_it_is_removed(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    old = artifact(root, "flatten/f1", {})
    removed, real_rmtree = [], shutil.rmtree

    def rmtree(path, ignore_errors=False):
        removed.append((Path(path).name, old.exists()))
        real_rmtree(path)

    monkeypatch.setattr(sweep_module.shutil, "rmtree", rmtree)
    sweep(plan(root, Registry(URI, {}), 7 * DAY_S))
    [(name, still_visible)] = removed
    assert name.startswith(".f1.discarded-") and not still_visible
    assert sorted(p.name for p in (root / "flatten").iterdir()) == []


def test_an_artifact_used_after_the_plan_is_kept(tmp_path):
    root = tmp_path / "artifacts"
    old = artifact(root, "flatten/f1", {})
    planned = plan(root, Registry(URI, {}), 7 * DAY_S)
    mark_used(old)  # a run looked it up meanwhile
    swept = sweep(planned)
    assert swept.freed == [] and refs(swept.used_meanwhile) == {"flatten/f1"} and (old / MANIFEST).is_file()


def test_nothing_outside_the_root_is_followed_or_touched(tmp_path):
    root, outside = tmp_path / "artifacts", tmp_path / "outside"
    elsewhere = artifact(outside, "tokenize/t1", {})  # an old artifact in another store
    leftover(outside, "group/.g1.building-0123abcd")
    (outside / "file.bin").write_bytes(b"o" * 100)
    root.mkdir()
    (root / "tokenize").symlink_to(outside / "tokenize")  # a stage directory that is a link
    (root / "group").mkdir()
    (root / "group" / ".g1.building-0123abcd").symlink_to(outside / "group" / ".g1.building-0123abcd")
    (root / "group" / "g2").symlink_to(elsewhere)  # an artifact directory that is a link
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "c1").symlink_to(outside)
    linking = artifact(root, "flatten/f1", {})  # garbage holding links out of the root
    (linking / "data" / "to-dir").symlink_to(outside)
    (linking / "data" / "to-file").symlink_to(outside / "file.bin")
    before = tree(outside)

    swept = sweep(plan(root, Registry(URI, {}), 0))
    assert refs(swept.freed) == {"flatten/f1"} and not linking.exists()
    assert tree(outside) == before


# ---------------------------------------------------------------------------- the command, on a real MLflow store


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the module (creating its schema takes seconds); each test its own names."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    MlflowClient(uri).search_registered_models()  # creates the schema
    return uri


@pytest.fixture(autouse=True)
def restored_environment(monkeypatch, clean_offline_env):
    """The command bounds MLflow's HTTP retries in the environment: undone after each test."""
    from lmpipe.registry.readiness import BOUNDED_HTTP

    for name in BOUNDED_HTTP:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


def gc(root: Path, uri: str, *args: str) -> int:
    return main(["gc", *args, "--set", f"artifacts.root={root}", "--set", f"registry.tracking_uri={uri}"])


def test_the_command_keeps_a_live_version_and_frees_its_chain_once_deleted_in_mlflow(tmp_path, mlflow_uri, capsys):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    client.create_registered_model("gc-test-a")
    version = int(client.create_model_version("gc-test-a", source=str(tmp_path / "model")).version)
    root = tmp_path / "artifacts"
    chain(root, "1")
    registered(root, "1", "gc-test-a", version, tracking_uri=mlflow_uri)
    leftover(root, "group/.g1.building-0123abcd")
    checkpoint(root, "c1", age_days=OLD)
    before = tree(root)

    assert gc(root, mlflow_uri, "--dry-run", "--older-than", "0") == 0
    out = capsys.readouterr().out
    assert tree(root) == before
    assert out.splitlines()[0].split() == ["kind", "where", "MB", "why"]
    assert "would free 0.0 MB in 2 directories" in out
    assert "kept 7 artifacts needed by 1 registered versions, 0 used recently (within 0 days)" in out

    client.delete_model_version("gc-test-a", str(version))
    assert gc(root, mlflow_uri) == 0, "--older-than 7, the default"
    out = capsys.readouterr().out
    assert "freed 0.0 MB in 9 directories" in out
    assert "eli5" not in out and "gc-test-a version 1 is no longer registered; last used 30.0 days ago" in out
    assert "kept 0 artifacts needed by 0 registered versions, 0 used recently (within 7 days)" in out
    assert [p for p in root.glob("*/*") if p.parent.name != ".locks"] == []


def test_a_registry_that_cannot_be_read_deletes_nothing(tmp_path, mlflow_uri, capsys):
    root = tmp_path / "artifacts"
    chain(root, "1")
    leftover(root, "group/.g1.building-0123abcd")
    before = tree(tmp_path)

    started = time.monotonic()
    assert gc(root, "http://127.0.0.1:9", "--older-than", "0") == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmpipe: gc: cannot read the model registry at http://127.0.0.1:9 (")
    assert err[0].endswith("; nothing was deleted")

    assert gc(root, f"sqlite:///{tmp_path / 'no-store' / 'mlflow.db'}", "--older-than", "0") == 2
    assert "no MLflow store at" in capsys.readouterr().err

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    client.create_registered_model("gc-test-b")
    client.create_model_version("gc-test-b", source="x", tags={"lmpipe.artifacts": "not json"})
    assert gc(root, mlflow_uri, "--set", "registry.clm_model_name=gc-test-b") == 2
    assert "gc-test-b version 1: its lmpipe.artifacts tag is not a JSON list" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_older_than_takes_a_number_of_days(capsys):
    with pytest.raises(SystemExit):
        main(["gc", "--older-than", "-1"])
    assert "expected a number of days, 0 or more, got '-1'" in capsys.readouterr().err
