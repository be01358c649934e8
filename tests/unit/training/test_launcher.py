"""lmpipe.training.launcher: the parent side, run against small fake trainer modules."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest

from lmpipe.errors import PipelineInputError, TrainingFailed
from lmpipe.training.events import PROGRESS_PREFIX
from lmpipe.training.launcher import run_training_process

LABEL = "train-fake"
JOB = {"block_size": 32, "train": {"max_steps": 8}}


@pytest.fixture()
def log(caplog) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger="tests.training_process")
    return logging.getLogger("tests.training_process")


@pytest.fixture()
def fake_trainer(tmp_path, monkeypatch):
    """Write `<name>.py` into an importable folder; returns a function that makes a fake trainer module."""
    modules = tmp_path / "modules"
    modules.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(modules))

    def make(name: str, body: str) -> str:
        prelude = textwrap.dedent(f"""\
            import json, sys
            PREFIX = {PROGRESS_PREFIX!r}
            def emit(event, **fields):
                print(PREFIX + json.dumps({{"event": event, **fields}}), flush=True)
            job = json.loads(open(sys.argv[1]).read())
        """)
        (modules / f"{name}.py").write_text(prelude + textwrap.dedent(body))
        return name

    return make


def messages(caplog, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def test_progress_is_relayed_to_the_log(fake_trainer, log, caplog, tmp_path):
    module = fake_trainer(
        "fake_trainer_ok",
        """
        print("a plain warning line")
        emit("begin", max_steps=job["train"]["max_steps"])
        emit("step", step=4, max_steps=8, loss=2.5, learning_rate=0.001, tokens_per_s=12345)
        emit("custom", block_size=job["block_size"])
        emit("checkpoint", path="/a/checkpoint-4", step=4)
        emit("resume", path="/a/checkpoint-4", step=4)
        emit("done", train_loss=2.0, train_steps=8, train_tokens=1024, train_runtime_s=1.5, parameters=10,
             device="cpu")
    """,
    )
    run_training_process(module, JOB, tmp_path / "job.json", log, LABEL)

    assert json.loads((tmp_path / "job.json").read_text()) == JOB  # the child reads the job from this file
    info = messages(caplog, logging.INFO)
    assert f"{LABEL}: training for 8 steps" in info
    assert f"{LABEL}: step 4/8 loss 2.5000 12,345 tokens/s" in info
    assert any(m.startswith(f"{LABEL}: ") and "'custom'" in m and "'block_size': 32" in m for m in info)
    assert f"{LABEL}: checkpoint at step 4" in info
    assert f"{LABEL}: resuming from checkpoint-4 (step 4), left by an earlier run" in messages(caplog, logging.WARNING)
    assert any(m.startswith(f"{LABEL}: ") and "done" in m for m in info)
    assert f"{LABEL}: a plain warning line" in messages(caplog, logging.DEBUG)
    assert not any(PROGRESS_PREFIX in m for m in info)  # events are rendered, not echoed raw


def test_nonzero_exit_raises_with_the_last_output_line(fake_trainer, log, caplog, tmp_path):
    module = fake_trainer(
        "fake_trainer_crash",
        """
        emit("begin", max_steps=8)
        print("Traceback (most recent call last):")
        print('  File "train.py", line 1, in <module>')
        print("RuntimeError: CUDA error: device-side assert triggered")
        emit("step", step=1, max_steps=8, loss=9.0, learning_rate=0.001, tokens_per_s=1)
        print("")
        sys.exit(3)
    """,
    )
    with pytest.raises(TrainingFailed) as caught:
        run_training_process(module, JOB, tmp_path / "job.json", log, LABEL)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{LABEL}: training process failed (exit code 3, pid ")
    assert message.endswith("RuntimeError: CUDA error: device-side assert triggered")
    (error_log,) = messages(caplog, logging.ERROR)
    assert "Traceback (most recent call last):" in error_log  # the full tail goes to the log
    assert PROGRESS_PREFIX not in error_log


def test_a_killed_process_names_the_signal_and_claims_no_memory_shortage(fake_trainer, log, tmp_path):
    module = fake_trainer(
        "fake_trainer_killed",
        """
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    """,
    )
    with pytest.raises(TrainingFailed) as caught:
        run_training_process(module, JOB, tmp_path / "job.json", log, LABEL)
    message = str(caught.value)
    assert message.startswith(f"{LABEL}: training process failed (killed by SIGKILL, pid ")
    assert "memory" not in message  # the kernel's OOM killer did not run: nothing may claim it did
    assert message.endswith("no output")


def test_the_last_line_quoted_is_never_a_progress_bar(fake_trainer, log, tmp_path):
    module = fake_trainer(
        "fake_trainer_terminated",
        """
        import os, signal
        print("loading 512 blocks")
        print("Map:  40%|####      | 400/1000 [00:01<00:02, 300.00 examples/s]", flush=True)
        bar = " 12%|#2        | 6/50 [00:03<00:22,  1.96it/s]"
        print(bar + "\\r" + bar.replace("6/50", "7/50"), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    """,
    )
    with pytest.raises(TrainingFailed) as caught:
        run_training_process(module, JOB, tmp_path / "job.json", log, LABEL)
    assert "(killed by SIGTERM, pid " in str(caught.value)
    assert str(caught.value).endswith("): loading 512 blocks")


def test_input_error_event_becomes_a_pipeline_input_error(fake_trainer, log, caplog, tmp_path):
    problem = "data.block_size=512 is larger than model.clm.pretrained='distilgpt2''s 256 positions"
    module = fake_trainer(
        "fake_trainer_input_error",
        f"""
        print("loading the model")
        emit("input_error", message={problem!r})
        sys.exit(2)
    """,
    )
    with pytest.raises(PipelineInputError) as caught:
        run_training_process(module, JOB, tmp_path / "job.json", log, LABEL)
    assert not isinstance(caught.value, TrainingFailed)
    assert str(caught.value) == problem
    assert not messages(caplog, logging.ERROR)


def test_a_missing_module_fails_with_pythons_message(log, tmp_path):
    with pytest.raises(TrainingFailed, match="No module named"):
        run_training_process("no_such_trainer_module_xyz", JOB, tmp_path / "job.json", log, LABEL)
