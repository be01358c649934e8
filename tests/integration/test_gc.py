"""`lmpipe gc` after a real run: the junk goes (an old artifact nothing needs, a killed build's scratch, a
discarded copy, old checkpoints), everything the registered version needs stays, so the next run is all
cache hits and registers nothing new."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from pipeline_probe import LMPIPE, ONE_MODEL_TASK_RUNS, TINY_CONFIG, registered_versions, task_states, tiny_config

from flows.clm import clm_flow
from lmpipe.store.manifest import MANIFEST, write_manifest
from lmpipe.store.upstream import published

pytestmark = pytest.mark.integration

FAST = ("train.max_steps=2", "eval.max_blocks=4")
MONTH_S = 30 * 86_400


def run(config) -> dict[str, list[str]]:
    state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    return task_states(state.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS)


def aged(*paths) -> None:
    moment = time.time() - MONTH_S
    for path in paths:
        os.utime(path, (moment, moment))


def test_gc_removes_the_junk_and_keeps_what_the_registered_version_needs(workspace):
    config = tiny_config(workspace, *FAST)
    run(config)
    root = workspace / "artifacts"
    kept = published(root)
    assert len(kept) == ONE_MODEL_TASK_RUNS
    (group_ref,) = [ref for ref in kept if ref.startswith("group/")]
    (tokenize_ref,) = [ref for ref in kept if ref.startswith("tokenize/")]

    # Junk, as a month of use leaves it: a model trained on these blocks and never registered (an old
    # manifest, with absolute paths under another mount point), the scratch of a build that was killed,
    # a discarded copy whose removal was cut short, and the checkpoints of a training abandoned long ago.
    old_model = root / "train-clm" / "0123456789abcdef"
    old_model.mkdir()
    (old_model / "model.safetensors").write_bytes(b"w" * 4096)
    write_manifest(old_model, {"stage": "train-clm", "inputs": {"blocks_dir": f"/mnt/old/{group_ref}"}})
    aged(old_model / MANIFEST)
    scratch = root / (tokenize_ref.replace("/", "/.") + ".building-0badf00d")
    scratch.mkdir()
    (scratch / "half.arrow").write_bytes(b"h" * 100)
    discarded = root / "group" / ".fedcba9876543210.discarded-12345678"
    discarded.mkdir()
    (discarded / "dataset.arrow").write_bytes(b"d" * 100)
    checkpoints = root / "checkpoints" / "89abcdef01234567"
    (checkpoints / "checkpoint-2").mkdir(parents=True)
    (checkpoints / "checkpoint-2" / "optimizer.pt").write_bytes(b"o" * 100)
    aged(checkpoints / "checkpoint-2" / "optimizer.pt", checkpoints / "checkpoint-2", checkpoints)
    files_before = {p for ref in kept for p in (root / ref).rglob("*")}

    command = [
        str(LMPIPE), "gc", "--older-than", "0", "--config", str(TINY_CONFIG),
        "--set", f"artifacts.root={root}", "--set", f"registry.tracking_uri={config.registry.tracking_uri}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("\n\n")[0].splitlines()[2:]  # under the header and its rule
    assert {line.split()[1]: line.split()[0] for line in table} == {
        "train-clm/0123456789abcdef": "artifact",
        "checkpoints/89abcdef01234567": "checkpoint",
        scratch.relative_to(root).as_posix(): "scratch",
        discarded.relative_to(root).as_posix(): "discarded",
    }, done.stdout
    assert "freed 0.0 MB in 4 directories" in done.stdout
    assert "kept 7 artifacts needed by 1 registered versions, 0 used recently" in done.stdout
    for junk in (old_model, scratch, discarded, checkpoints):
        assert not junk.exists(), junk
    assert published(root) == kept and {p for ref in kept for p in (root / ref).rglob("*")} == files_before
    assert [p for p in root.glob("*/.*") if not p.parent.name.startswith(".")] == [], "nothing set aside is left"

    states = run(config)
    assert {stage: set(s) for stage, s in states.items()} == {stage: {"Cached"} for stage in states}, states
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
