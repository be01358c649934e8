"""Bad input through the command line, as a table: each case ends in one clear line naming the
field or file, a non-zero exit, no model version and no half-written artifact.

Every case calls `lmpipe run` (the CLI's `main`) in this process, against the session's real
Prefect server; config errors exit 2 before a flow starts, input found while running exits 1
once the flow has failed. One case runs the installed console script to prove the exit code
reaches the shell.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pipeline_probe import PROJECT_ROOT, registered_versions
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
    # ---- the data, found while the flow runs (exit 1)
    Case(
        "missing file",
        LOCAL,
        "data.path: no file matches '{workspace}/absent.jsonl'",
        1,
        make=lambda w: str(w / "absent.jsonl"),
    ),
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
        "data.path: cannot read '{made}' as parquet: ",
        1,
        make=file_with("posts.parquet", b"PAR1 these bytes are not a parquet file"),
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
        make=jsonl([{"text": "hi"} for _ in range(20)]),
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
        1,
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},  # a closed port stands in for "no network"
        within_s=30,
    ),
    Case(
        "unreachable hub model",
        ("model.clm.pretrained=acme/not-here",),
        "model.clm.pretrained: tokenizer 'acme/not-here' needs the Hugging Face Hub",
        1,
        env={"HF_ENDPOINT": "http://127.0.0.1:9"},
        within_s=30,
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
    overrides += [override.format(made=made) for override in case.overrides]
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
    assert registered_versions(tracking_uri) == {}, "a failed run registers nothing"
    half_written = list((workspace / "artifacts").rglob("*.building-*"))
    assert half_written == [], f"half-written artifacts left behind: {half_written}"


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
