"""Throughput reporting (FLOPs per token for MFU) and the data-loading settings around training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForMaskedLM

from lmpipe.cli.services import PROJECT_ROOT
from lmpipe.compute.devices import DevicePlan
from lmpipe.compute.throughput import flops_per_token, mfu
from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.data.blocks import group_saved
from lmpipe.data.tokenize import tokenize_saved
from lmpipe.training.job import NOT_TRAINED_BY, TrainingJob, job_file_content
from lmpipe.training.loop import dataloader_workers, pin_memory, training_arguments

# ---------------------------------------------------------------------------- FLOPs per token


def test_gpt2_124m_flops_per_token_follow_nanogpts_estimate():
    model = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 124,439,808 parameters, published
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    non_position = 124_439_808 - 1024 * 768  # nanoGPT leaves the position embeddings out of N
    assert flops_per_token(model, 1024) == 6 * non_position + 12 * 12 * 12 * 64 * 1024


def test_roberta_position_embeddings_are_left_out_too():
    config = RobertaConfig(
        vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=130,
    )  # fmt: skip
    model = RobertaForMaskedLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    positions = 130 * 64
    assert flops_per_token(model, 128) == 6 * (parameters - positions) + 12 * 2 * 4 * 16 * 128


def test_mfu_is_achieved_over_peak():
    assert mfu(1_000, 2_000.0, 4e6) == pytest.approx(0.5)


# ---------------------------------------------------------------------------- data loading


CPU, GPU = DevicePlan("cpu", "fp32", 8), DevicePlan("cuda", "bf16", 8)


@pytest.mark.parametrize(
    ("plan", "settings", "workers", "pinned"),
    [
        (CPU, {}, 0, False),  # a CPU run keeps its cores for the math
        (GPU, {}, 4, True),  # a GPU run is fed by min(4, cores - 1) workers into pinned memory
        (DevicePlan("cuda", "bf16", 2), {}, 1, True),
        (DevicePlan("cuda", "bf16", 1), {}, 0, True),
        (GPU, {"dataloader_workers": 0, "pin_memory": False}, 0, False),
        (CPU, {"dataloader_workers": 3}, 3, False),
    ],
)
def test_dataloader_settings_default_by_device_and_can_be_set(plan, settings, workers, pinned):
    train = TrainConfig(**settings)
    assert (dataloader_workers(train, plan), pin_memory(train, plan)) == (workers, pinned)


def test_the_trainer_gets_the_dataloader_settings(tmp_path):
    # (transformers itself turns pinning off where there is no accelerator, so only workers show here)
    arguments = training_arguments(TrainConfig(dataloader_workers=3), tmp_path, CPU)
    assert arguments.dataloader_num_workers == 3
    assert arguments.dataloader_persistent_workers is False  # workers see each epoch's masking seed


def test_dataloader_settings_are_not_part_of_what_a_model_is_keyed_by():
    assert {"dataloader_workers", "pin_memory"} <= NOT_TRAINED_BY
    assert "compile" not in NOT_TRAINED_BY  # compiled kernels may round differently


def test_mlm_weights_are_the_same_with_or_without_dataloader_workers(tiny_tokenizer, sample_texts, tmp_path):
    """Masks are drawn in the collator, which runs in the workers: two epochs, 0 vs 2 workers, same weights."""
    tokenizer_dir = tmp_path / "tokenize" / "tokenizer"
    tiny_tokenizer.save_pretrained(str(tokenizer_dir))
    DatasetDict(
        train=Dataset.from_dict({"text": sample_texts[:60]}), test=Dataset.from_dict({"text": sample_texts[:5]})
    ).save_to_disk(str(tmp_path / "flat"))
    tokenize_saved(tmp_path / "flat", tiny_tokenizer, 1, tmp_path / "tokenize" / "dataset")
    group_saved(tmp_path / "tokenize" / "dataset", tmp_path / "blocks" / "dataset", 32, "drop", 0)
    model = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)

    def weights(workers: int) -> dict:
        """Trained as the task trains: `python -m lmpipe.training.worker job.json`, a fresh process that forks
        its dataloader workers (never forked from this test process and its threads)."""
        out = tmp_path / f"model-{workers}"
        out.mkdir()
        train = TrainConfig(epochs=2, batch_size=8, checkpoint_steps=None, dataloader_workers=workers)
        job = TrainingJob(
            objective="mlm",
            blocks_dir=str(tmp_path / "blocks"),
            tokenizer_dir=str(tmp_path / "tokenize" / "tokenizer"),
            model=model,
            train=train,
            block_size=32,
            checkpoint_dir=str(tmp_path / "ck"),
        )
        job_file = tmp_path / f"job-{workers}.json"
        job_file.write_text(json.dumps(job_file_content(job, out)))
        finished = subprocess.run(
            [sys.executable, "-m", "lmpipe.training.worker", str(job_file)],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
        )
        assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-3000:]
        return load_file(out / "model.safetensors")

    single, with_workers = weights(0), weights(2)
    assert single.keys() == with_workers.keys()
    for name in single:
        assert (single[name] == with_workers[name]).all(), name
