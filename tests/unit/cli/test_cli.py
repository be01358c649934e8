"""lmpipe.cli.main: the `config` command, one-line config errors, and the summary table."""

from __future__ import annotations

import json
import os

import pytest

from lmpipe.cli.main import main
from lmpipe.cli.offline import apply_offline_defaults
from lmpipe.cli.tables import summary_table


@pytest.fixture(autouse=True)
def _offline_env(clean_offline_env):
    """main() setdefault()s telemetry switches in os.environ; keep them from leaking into other tests."""


def test_config_command_prints_the_resolved_config(capsys):
    assert main(["config", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert printed["train"]["epochs"] == 2
    assert printed["data"]["block_size"] == 128  # the rest are defaults


def test_config_command_reads_a_file_and_overrides_on_top(repo_root, capsys):
    assert (
        main(
            [
                "config",
                "-c",
                str(repo_root / "configs" / "tiny.yaml"),
                "-s",
                "data.block_size=16",
                "-s",
                "train.learning_rate=5e-4",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"]["block_size"] == 16
    assert printed["data"]["builtin_documents"] == 60
    assert printed["train"]["learning_rate"] == 5e-4


@pytest.mark.parametrize("override", ["train.learning_rate=-1", "train.epoch=2", "data.block_size=100000"])
def test_invalid_config_is_one_line_on_stderr_with_exit_code_2(capsys, override):
    assert main(["config", "--set", override]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lmpipe: invalid config")


def test_malformed_override_is_reported_without_a_traceback(capsys):
    assert main(["config", "--set", "train.epochs"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lmpipe: override 'train.epochs'")


def test_run_rejects_a_bad_config_before_starting_a_flow(capsys, monkeypatch):
    monkeypatch.setattr("lmpipe.cli.main.load_flow", lambda name: pytest.fail("a flow was loaded for a bad config"))
    assert main(["run", "clm", "--set", "train.learning_rate=-1"]) == 2
    assert capsys.readouterr().err.startswith("lmpipe: invalid config")


def test_unknown_flow_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "gan"])
    assert caught.value.code == 2


def test_offline_defaults_fill_in_but_never_override(monkeypatch, clean_offline_env):
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    apply_offline_defaults()
    assert os.environ["DO_NOT_TRACK"] == "0"
    for key, value in clean_offline_env.items():
        if key != "DO_NOT_TRACK":
            assert os.environ[key] == value


# ---------------------------------------------------------------------------- summary table


def write_registration(directory, **fields):
    registration = {
        "objective": "clm",
        "model_name": "eli5-clm",
        "version": 1,
        "run_id": "0123456789abcdef",
        "tracking_uri": "sqlite:////work/mlflow.db",
        "perplexity": 49.6123,
        "base_perplexity": 1234.5,
        "eval_set": "abc",
        **fields,
    }
    directory.mkdir(parents=True)
    (directory / "registration.json").write_text(json.dumps(registration))
    return str(directory)


def test_summary_table_lists_each_registration_and_the_mlflow_command(tmp_path):
    table = summary_table(
        [
            write_registration(tmp_path / "clm"),
            write_registration(
                tmp_path / "mlm",
                objective="mlm",
                model_name="eli5-mlm",
                version=12,
                run_id="feedbeef",
                perplexity=8.76,
                base_perplexity=float("inf"),
                alias="challenger",
            ),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["model", "version", "alias", "base", "perplexity", "perplexity", "MLflow", "run"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["eli5-clm", "1", "none", "1,234.50", "49.61", "0123456789abcdef"]
    assert lines[3].split() == ["eli5-mlm", "12", "challenger", "inf", "8.76", "feedbeef"]
    assert "mlflow ui --backend-store-uri sqlite:////work/mlflow.db" in table


def test_summary_table_columns_line_up(tmp_path):
    table = summary_table(
        [
            write_registration(tmp_path / "a", model_name="a-much-longer-model-name"),
            write_registration(tmp_path / "b", model_name="b"),
        ]
    )
    header, rule, first, second = table.splitlines()[:4]
    start = header.index("version")
    assert first[start:].startswith("1") and second[start:].startswith("1")
    assert rule.index(" ") == len("a-much-longer-model-name")


def test_summary_table_points_at_a_tracking_server(tmp_path):
    table = summary_table([write_registration(tmp_path / "clm", tracking_uri="http://mlflow.internal:5000")])
    assert "open http://mlflow.internal:5000" in table
    assert "mlflow ui" not in table


def test_summary_table_without_registrations_is_just_the_header():
    lines = summary_table([]).splitlines()
    assert len(lines) == 2
    assert "mlflow" not in summary_table([])
