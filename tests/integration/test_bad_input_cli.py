"""Bad input through the command line, as a table: each case ends in one clear line naming the
field or file, a non-zero exit, no model version and no half-written artifact.

Every case calls `lmpipe run` (the CLI's `main`) in this process, against the session's real
Prefect server; config errors exit 2 before a flow starts, input found while running exits 1
once the flow has failed. One case runs the installed console script to prove the exit code
reaches the shell.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pipeline_probe import PROJECT_ROOT, lmpipe_command, on_the_session_server, registered_versions, trainers_of
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

from lmpipe.cli.main import main

pytestmark = pytest.mark.integration

TINY = PROJECT_ROOT / "configs" / "tiny.yaml"
ANSWERS = [{"q_id": str(i), "answers": {"text": [f"answer {i} explains why the sky is blue"] * 4}} for i in range(40)]


def jsonl(rows: list[dict]) -> Callable[[Path], str]:
    def write(workspace: Path) -> str:
        path = workspace / "data.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    return write


def file_with(name: str, content: bytes) -> Callable[[Path], str]:
    def write(workspace: Path) -> str:
        (workspace / name).write_bytes(content)
        return str(workspace / name)

    return write


def tokenizer_without_mask(workspace: Path) -> str:
    """A GPT-2-style tokenizer (end-of-text only, no mask token), trained on a few sentences."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([row["answers"]["text"][0] for row in ANSWERS], vocab_size=300, show_progress=False)
    directory = workspace / "gpt2-style-tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>").save_pretrained(directory)
    return str(directory)


def unknown_model_type(workspace: Path) -> str:
    (workspace / "my-lm").mkdir()
    (workspace / "my-lm" / "config.json").write_text(json.dumps({"model_type": "my-own-lm", "n_positions": 64}))
    return str(workspace / "my-lm")


def model_directory(*files: str) -> Callable[[Path], str]:
    """A local model directory holding only `files` ('config.json' is a valid GPT-2 config)."""

    def write(workspace: Path) -> str:
        directory = workspace / "my-gpt2"
        directory.mkdir()
        for name in files:
            content = json.dumps({"model_type": "gpt2", "n_positions": 64}) if name == "config.json" else "x"
            (directory / name).write_text(content)
        return str(directory)

    return write


def corrupt_model_config(workspace: Path) -> str:
    (workspace / "broken-gpt2").mkdir()
    (workspace / "broken-gpt2" / "config.json").write_text('{"model_type": "gpt2", n_positions: 64}')
    return str(workspace / "broken-gpt2")


def deleted_experiment(workspace: Path) -> str:
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    client.delete_experiment(client.create_experiment("retired"))
    return "retired"


def half_migrated_store(workspace: Path) -> str:
    """A store whose schema revision is behind its tables, as a kill inside MLflow's migrations leaves it:
    migrating it again fails on 'table mcp_servers already exists' (the issue's report)."""
    db = workspace / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # MLflow creates the whole schema
    with sqlite3.connect(db) as connection:
        connection.execute("update alembic_version set version_num = 'b7e4c1a90f23'")  # before mcp_servers
    return str(db)


def read_only_directory(workspace: Path) -> str:
    """A directory this process may not write in; root may write anywhere but in /sys."""
    if os.geteuid() == 0:
        return "/sys/fs/lmpipe-artifacts"
    directory = workspace / "read-only"
    directory.mkdir(mode=0o555)
    return str(directory)


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]  # '{made}' is replaced by what `make` returns (a path it wrote)
    expected: str  # '{made}' and '{workspace}' are filled in
    exit_code: int
    make: Callable[[Path], str] | None = None
    flow: str = "clm"
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # --config, default configs/tiny.yaml
    within_s: float | None = None  # must fail this fast (a dead network must never make a run hang)
    preflight: bool = False  # found by the pre-flight: in under 10 s, before any stage ran


LOCAL = ("data.source=local", "data.path={made}")
CASES = [
    # ---- the config, rejected before any flow starts (exit 2)
    Case("unknown key", ("train.epoch=2",), "invalid config: unknown key 'train.epoch'", 2),
    Case("wrong type", ("train.batch_size=many",), "train.batch_size = 'many': Input should be a valid integer", 2),
    Case("block_size 0", ("data.block_size=0",), "data.block_size = 0: Input should be greater than 1", 2),
    Case(
        "block_size over the positions",
        ("data.block_size=128",),
        "data.block_size=128 is larger than model.clm's 64 positions",
        2,
    ),
    Case("test_size 0", ("data.test_size=0",), "data.test_size = 0: Input should be greater than 0", 2),
    Case("test_size 1", ("data.test_size=1",), "data.test_size = 1: Input should be less than 1", 2),
    Case(
        "unknown model type",
        ("model.clm.pretrained={made}", "data.block_size=32"),
        "model.clm.pretrained='{made}': model type 'my-own-lm' is unknown to transformers",
        2,
        make=unknown_model_type,
    ),
    Case("missing config file", (), "config file not found: {workspace}/nope.yaml", 2, config="nope.yaml"),
    Case(
        "percent slice of a stream",
        ("data.streaming=true", "data.split=train[:10%]"),
        "data.split='train[:10%]': with data.streaming=true a slice counts rows from the start",
        2,
    ),
    Case(
        "registered name with a slash",
        ("registry.clm_model_name=team/eli5-clm",),
        "registry.clm_model_name = 'team/eli5-clm': a registered model name cannot contain /",
        2,
    ),
    Case(
        "registered name with a quote",
        ("registry.mlm_model_name=it's-mlm",),
        "registry.mlm_model_name = \"it's-mlm\": a registered model name cannot contain '",
        2,
        flow="mlm",
    ),
    Case(
        "model config.json that does not parse",
        ("model.clm.pretrained={made}", "data.block_size=32"),
        "model.clm.pretrained='{made}': {made}/config.json is not valid JSON (Expecting property name",
        2,
        make=corrupt_model_config,
    ),
    # ---- found by the pre-flight, before any stage runs (exit 2, in seconds)
    Case(
        "missing file",
        LOCAL,
        "data.path: no file matches '{workspace}/absent.jsonl'",
        2,
        make=lambda w: str(w / "absent.jsonl"),
        preflight=True,
    ),
    Case(
        "FSDP for the masked LM",
        ("train.fsdp=full_shard auto_wrap",),
        "train.fsdp='full_shard auto_wrap': the masked LM cannot be sharded with FSDP here",
        2,
        flow="mlm",
        preflight=True,
    ),
    Case(
        "Ray cluster that is not there",
        ("train.launcher=ray", "train.ray_address=127.0.0.1:1"),
        "train.ray_address='127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1",
        2,
        preflight=True,
    ),
    Case(
        "data.path at a directory",
        LOCAL,
        "data.path: '{made}' is a directory; name its files with a glob, e.g. '{made}/*.jsonl'",
        2,
        make=lambda w: str((w / "corpus").mkdir() or w / "corpus"),
        preflight=True,
    ),
    Case(
        "model directory with only config.json",
        ("model.clm.pretrained={made}", "data.block_size=32"),
        "model.clm.pretrained='{made}': {made} has no weights (model.safetensors or pytorch_model.bin)",
        2,
        make=model_directory("config.json"),
        preflight=True,
    ),
    Case(
        "model directory without tokenizer files",
        ("model.clm.pretrained={made}", "data.block_size=32"),
        "model.clm.pretrained='{made}': {made} has no tokenizer files",
        2,
        make=model_directory("config.json", "model.safetensors"),
        preflight=True,
    ),
    Case(
        "local tokenizer path that does not exist",
        ("tokenizer.pretrained={workspace}/my-tokenizer",),
        "tokenizer.pretrained='{workspace}/my-tokenizer': {workspace}/my-tokenizer does not exist",
        2,
        preflight=True,
    ),
    Case(
        "read-only artifacts root",
        ("artifacts.root={made}",),
        "artifacts.root='{made}': cannot write there (",
        2,
        make=read_only_directory,
        preflight=True,
    ),
    Case(
        "nothing listens at the tracking URI",
        ("registry.tracking_uri=http://127.0.0.1:1",),
        "registry.tracking_uri: no MLflow tracking server answers at http://127.0.0.1:1 within 5 s",
        2,
        within_s=60,
        preflight=True,
    ),
    Case(
        "deleted experiment",
        ("registry.experiment={made}",),
        "registry.experiment='retired' was deleted in MLflow (experiment id ",
        2,
        make=deleted_experiment,
        preflight=True,
    ),
    Case(
        "half-migrated MLflow store",
        (),
        "registry.tracking_uri: the MLflow store '{made}' was left half-created or half-migrated (migrating it "
        "failed: (sqlite3.OperationalError) table mcp_servers already exists); it holds no runs or model "
        "versions, so delete it (rm '{made}') and run again",
        2,
        make=half_migrated_store,
        preflight=True,
    ),
    # ---- the data, found while the flow runs (exit 1)
    Case(
        "empty file",
        LOCAL,
        "data.path: local dataset '{made}' split 'train' has 0 rows",
        1,
        make=file_with("empty.csv", b"title,body\n"),
    ),
    Case(
        "corrupt parquet",
        LOCAL,
        "data.path: cannot read {made} as parquet: ArrowInvalid: Parquet magic bytes not found",
        1,
        make=file_with("posts.parquet", b"PAR1 these bytes are not a parquet file"),
    ),
    Case(
        "a malformed JSON line",
        LOCAL,
        "data.path: {made} line 3 is not valid JSON: Unterminated string",
        1,
        make=lambda w: str(
            (w / "answers.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "cut off\n{"text": "four"}\n')
            and w / "answers.jsonl"
        ),
    ),
    Case(
        "a binary file named .txt",
        LOCAL,
        "data.path: {made} line 1 is not UTF-8 text",
        1,
        make=file_with("x.txt", bytes(range(128, 256)) * 4),
    ),
    Case(
        "text field absent",
        LOCAL,
        "data.text_field='answers.text'",
        1,
        make=jsonl([{"title": f"t{i}", "body": "some words here"} for i in range(20)]),
    ),
    Case(
        "text field holds numbers",
        (*LOCAL, "data.text_field=text"),
        "data.text_field='text' holds int values; it must be a string or a list of strings",
        1,
        make=jsonl([{"text": i * 7} for i in range(20)]),
    ),
    Case(
        "every text shorter than block_size",
        (*LOCAL, "data.text_field=text", "data.block_size=64"),
        "data.block_size=64: the train split has",
        1,
        make=jsonl([{"text": f"hi {i}"} for i in range(12)]),  # distinct (copies of one text share a side): 3 held out
    ),
    Case(
        "MLM tokenizer without a mask token",
        ("model.mlm.tokenizer={made}",),
        "model.mlm.tokenizer: the tokenizer has no mask token, which masked-LM training needs",
        1,
        make=tokenizer_without_mask,
        flow="mlm",
    ),
    Case(
        "unreachable hub dataset",
        ("data.source=hub", "data.path=eli5_category"),
        "data.path: dataset 'eli5_category' needs the Hugging Face Hub (http://127.0.0.1:9)",
        2,
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},  # a closed port stands in for "no network"
        preflight=True,
    ),
    Case(
        "unreachable hub model",
        ("model.clm.pretrained=acme/not-here",),
        "model.clm.pretrained: model 'acme/not-here' needs the Hugging Face Hub",
        2,
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},
        preflight=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_a_non_zero_exit_and_no_version(case: Case, workspace, monkeypatch, capsys):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    made = case.make(workspace) if case.make else ""
    tracking_uri = f"sqlite:///{workspace / 'mlflow.db'}"
    overrides = [f"artifacts.root={workspace / 'artifacts'}", f"registry.tracking_uri={tracking_uri}"]
    overrides += [override.format(made=made, workspace=workspace) for override in case.overrides]
    config = str(workspace / case.config) if case.config else str(TINY)
    argv = ["run", case.flow, "--config", config, *(arg for o in overrides for arg in ("--set", o))]

    started = time.monotonic()
    exit_code = main(argv)
    elapsed = time.monotonic() - started

    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_code == case.exit_code, last_line
    assert last_line.startswith("lmpipe: "), last_line
    assert case.expected.format(made=made, workspace=workspace) in last_line, last_line
    if case.within_s is not None:
        assert elapsed < case.within_s, f"took {elapsed:.0f} s to give up"
    if case.preflight:
        assert elapsed < 10, f"the pre-flight took {elapsed:.1f} s"
        stages = [p.name for p in (workspace / "artifacts").glob("*") if p.is_dir()]
        assert stages == [], f"stages ran before the pre-flight failed: {stages}"
    if Path(tracking_uri.removeprefix("sqlite:///")).exists():
        assert registered_versions(tracking_uri) == {}, "a failed run registers nothing"
    half_written = list((workspace / "artifacts").rglob("*.building-*"))
    assert half_written == [], f"half-written artifacts left behind: {half_written}"
    assert trainers_of(workspace) == [], "a training process outlived its run"


def test_the_console_script_exits_non_zero_with_one_line(workspace):
    script = Path(sys.executable).with_name("lmpipe")
    done = subprocess.run(
        [str(script), "run", "clm", "--config", str(TINY), "--set", "data.test_size=1"],
        capture_output=True,
        text=True,
        cwd=workspace,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lmpipe: invalid config: data.test_size = 1: Input should be less than 1"
    ]
    assert not (workspace / "artifacts").exists() and not (workspace / "mlflow.db").exists()


def test_a_failure_inside_a_flow_ends_stderr_with_its_one_line_and_no_traceback(workspace):
    """As a user sees it in a terminal: Prefect's log lines, one line each, then the error, last."""
    (workspace / "data.jsonl").write_text("".join(json.dumps({"title": f"t{i}"}) + "\n" for i in range(20)))
    command, env = lmpipe_command(workspace)
    env = on_the_session_server(env)
    command += ["--set", "data.source=local", "--set", f"data.path={workspace / 'data.jsonl'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=workspace, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("lmpipe: clm flow failed: PipelineInputError: data.text_field='answers.text'"), lines
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert any("--verbose shows it here" in line for line in lines), "the terminal says where the traceback went"

    verbose = subprocess.run(
        [*command, "--verbose"], capture_output=True, text=True, cwd=workspace, env=env, timeout=300
    )
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[-1]
