"""Derived cache keys: every project module a stage executes is in its key, and only the libraries
that shape its output are.

Each stage's work runs here for real, on a tiny corpus, under a profiler that records every Python
function it calls. Any project module executed that the stage's import closure (its key) misses
fails the test: the key would not change when that module does.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from lmpipe.config.loading import load_config
from lmpipe.data.blocks import group_dataset
from lmpipe.data.download import download_dataset
from lmpipe.data.flatten import flatten_dataset
from lmpipe.data.tokenize import tokenize_dataset
from lmpipe.data.tokenizer_choice import tokenizer_origin
from lmpipe.evaluation.report import write_evaluation
from lmpipe.models.base import require_objective_tokens
from lmpipe.registry.register import register_model
from lmpipe.store import code_version as code_versions
from lmpipe.store.code_version import PROJECT_ROOT, is_followed, project_closure
from lmpipe.store.publish import ensure_built
from lmpipe.training.launcher import training_job
from lmpipe.training.loop import train_model

LOG = logging.getLogger("test-stage-keys")
TINY = PROJECT_ROOT / "configs" / "tiny.yaml"


def module_of(filename: str) -> str | None:
    """The project module a source file is, or None for library and test code."""
    path = Path(filename).resolve()
    if PROJECT_ROOT not in path.parents or path.suffix != ".py" or "tests" in path.relative_to(PROJECT_ROOT).parts:
        return None
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts[0] in ("lmpipe", "tasks", "flows") else None


@contextmanager
def executed_modules() -> Iterator[set[str]]:
    """The project modules whose functions run while inside (this thread and threads started meanwhile)."""
    files: set[str] = set()

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            files.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    threading.setprofile(profile)
    modules: set[str] = set()
    try:
        yield modules
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        modules.update(name for name in map(module_of, files) if name)


def missing_from_key(executed: set[str], task_module: str) -> set[str]:
    """Project modules that ran and can shape the artifact, but that the stage's key does not cover."""
    return {module for module in executed if is_followed(module)} - set(project_closure(task_module))


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, set[str]]:
    """Run every stage's work once, as its task would, and record what each one executed."""
    root = tmp_path_factory.mktemp("stage-keys")
    config = load_config(
        TINY,
        [
            f"artifacts.root={root / 'artifacts'}",
            f"registry.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "data.num_proc=1",  # in this process, where the profiler sees it
            "train.max_steps=2",
            "train.checkpoint_steps=1",
            "data.remainder=pad",  # pad reads the tokenizer's pad id
        ],
    )
    artifacts = root / "artifacts"
    seen: dict[str, set[str]] = {}

    def stage(name: str, key: str, inputs: dict[str, Any], build: Callable[[Path], object]) -> Path:
        out = artifacts / name / key
        with executed_modules() as modules:
            ensure_built(out, name, inputs, build, LOG)
        seen[name] = seen.get(name, set()) | modules
        return out

    raw = stage("download", "k", {}, lambda scratch: download_dataset(config.data, scratch, LOG))
    flat = stage("flatten", "k", {"upstream": str(raw)}, lambda s: flatten_dataset(raw, "answers.text", s, LOG))
    tokens = stage("tokenize", "k", {"upstream": str(flat)}, lambda s: tokenize_dataset(flat, config, "clm", s, LOG))
    blocks = stage(
        "group", "k", {"upstream": str(tokens)}, lambda s: group_dataset(tokens, 32, config.data.remainder, s, LOG)
    )
    evaluated = {}
    for objective in ("clm", "mlm"):
        model_dir = stage("train", objective, {}, partial(train, config, objective, blocks, tokens))
        evaluate = partial(write_evaluation, objective, model_dir, blocks, config)
        evaluated[objective] = model_dir, stage("evaluate", objective, {"blocks": str(blocks)}, evaluate)
    # One registration: both objectives run the same registry code (and MLflow takes seconds per version).
    model_dir, eval_dir = evaluated["mlm"]
    stage("register", "mlm", {}, lambda _scratch: register_model("mlm", model_dir, eval_dir, config))
    return seen


def train(config: Any, objective: str, blocks: Path, tokens: Path, scratch: Path) -> None:
    """The training task's work: its checks in the flow process, then the training process's, here in one."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokens / "tokenizer"))
    require_objective_tokens(tokenizer, objective, tokenizer_origin(config, objective).field)
    checkpoints = Path(tempfile.mkdtemp(prefix=f"checkpoints-{objective}-"))
    train_model(training_job(objective, str(blocks), str(tokens), config, checkpoints), scratch)


STAGE_TASKS = {
    "download": "tasks.download",
    "flatten": "tasks.flatten",
    "tokenize": "tasks.tokenize",
    "group": "tasks.group",
    "train": "tasks.train",
    "evaluate": "tasks.evaluate",
    "register": "tasks.register",
}


@pytest.mark.parametrize("stage", sorted(STAGE_TASKS))
def test_every_module_a_stage_executes_is_in_its_key(stages, stage):
    executed = stages[stage]
    assert any(module.startswith("lmpipe.") and is_followed(module) for module in executed), executed
    assert missing_from_key(executed, STAGE_TASKS[stage]) == set()


def test_the_check_catches_a_module_left_out_of_a_key(stages):
    """The same check, against a key that leaves out one module the stage ran: it must name that module."""
    assert "lmpipe.compute.devices" in stages["train"]  # precision `auto` is decided there
    closure = set(project_closure("tasks.train")) - {"lmpipe.compute.devices"}
    assert {m for m in stages["train"] if is_followed(m)} - closure == {"lmpipe.compute.devices"}


# ---------------------------------------------------------------------------- the libraries in each key


@pytest.fixture()
def torch_build(monkeypatch):
    """Pretend torch is another build (a GPU worker's), with fresh code versions."""

    def install(version: str) -> None:
        real = code_versions.library_version
        monkeypatch.setattr(code_versions, "library_version", lambda lib: version if lib == "torch" else real(lib))
        code_versions.code_version.cache_clear()

    yield install
    code_versions.code_version.cache_clear()


def test_a_cpu_and_a_gpu_worker_share_the_data_artifacts_but_not_the_trained_model(torch_build, tmp_path):
    from tasks.download import download_output_dir
    from tasks.flatten import flatten_output_dir
    from tasks.group import group_output_dir
    from tasks.tokenize import tokenize_output_dir
    from tasks.train import train_output_dir

    config = load_config(TINY, [f"artifacts.root={tmp_path}"])

    def keys() -> dict[str, Path]:
        return {
            "download": download_output_dir(config),
            "flatten": flatten_output_dir("d", config),
            "tokenize": tokenize_output_dir("f", config, "clm"),
            "group": group_output_dir("t", config),
            "train": train_output_dir("g", "t", config, "clm"),
        }

    torch_build("2.13.0+cpu")
    cpu = keys()
    torch_build("2.13.0+cu128")
    gpu = keys()
    assert {stage for stage in cpu if cpu[stage] != gpu[stage]} == {"train"}


def test_the_python_patch_version_is_in_no_key_but_the_builtin_corpus(monkeypatch, tmp_path):
    from tasks.download import download_output_dir
    from tasks.flatten import flatten_output_dir

    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "one"}\n')
    local = load_config(TINY, [f"artifacts.root={tmp_path}", "data.source=local", f"data.path={data}"])
    builtin = load_config(TINY, [f"artifacts.root={tmp_path}"])
    before = (download_output_dir(local), flatten_output_dir("d", local), download_output_dir(builtin))
    monkeypatch.setattr(sys, "version", "3.11.99 (main) [GCC]")
    code_versions.code_version.cache_clear()
    after = (download_output_dir(local), flatten_output_dir("d", local), download_output_dir(builtin))
    code_versions.code_version.cache_clear()
    assert after[:2] == before[:2]
    assert after[2] != before[2], "the builtin corpus is the stdlib's docstrings: another Python, another corpus"
