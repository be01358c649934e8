"""FSDP (train.fsdp) on two CPU ranks with gloo, for real, through the train task's own launcher.

accelerate runs CPU ranks with DDP whatever the fsdp setting; PipelineTrainer switches them to FSDP2
(lmpipe.training.trainer says why). Here, with train.fsdp="full_shard auto_wrap" on the causal model:

- the run really is FSDP: every checkpoint holds FSDP's own model and optimizer files, and the manifest
  that makes it complete;
- each step's loss is the 2-rank DDP run's, to fp32 reduction order;
- a re-run after losing the last checkpoint and the model resumes from the one before, and ends with the
  uninterrupted run's weights;
- the saved model.safetensors holds whole tensors, and from_pretrained loads it.

The masked model is not covered: accelerate 1.15's FSDP2 wrapping fails on RoBERTa's tied embeddings and
decoder bias (on any device), before the first step.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from pipeline_probe import tiny_config
from prefect import flow
from safetensors.torch import load_file
from test_distributed import train
from transformers import AutoModelForCausalLM

from lmpipe.store.keys import artifact_path
from lmpipe.training import checkpoints
from lmpipe.training.launcher import training_job
from tasks.download import download
from tasks.flatten import flatten
from tasks.group import group
from tasks.tokenize import tokenize

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

STEPS, EVERY = 12, 4
LOG = logging.getLogger("tests.fsdp")
LOG.setLevel(logging.INFO)
# Measured: FSDP and DDP step losses differ by at most 4e-8 relative over 12 fp32 steps (the gradients'
# reduction order); the tolerance is test_distributed's, which separates order from data.
STEP_TOLERANCE = 1e-5


@flow
def prepare(config) -> tuple[str, str]:
    tokens = tokenize(flatten(download(config), config), config, "clm")
    # Tasks hand on references (<stage>/<key>); the training job takes directories.
    return str(artifact_path(config.artifacts.root, group(tokens, config))), str(
        artifact_path(config.artifacts.root, tokens)
    )


def start_job(workspace: Path, name: str, *extra: str):
    """A 2-rank causal job of 4 blocks per rank, dropout off, fp32; returns (job, job file, model dir)."""
    config = tiny_config(
        workspace,
        f"train.max_steps={STEPS}",
        f"train.checkpoint_steps={EVERY}",
        "train.logging_steps=1",
        "train.batch_size=4",
        "train.processes=2",
        "train.precision=fp32",
        "model.clm.hidden_size=64",
        "model.clm.dropout=0.0",
        *extra,
    )
    blocks, tokens = prepare(config)
    out_dir = workspace / name / "model"
    out_dir.mkdir(parents=True)
    job = training_job("clm", blocks, tokens, config, workspace / name / "checkpoints")
    return job, workspace / name / "job.json", out_dir


def losses(out_dir: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((out_dir / "train_history.json").read_text())]


def test_fsdp_on_cpu_ranks_trains_like_ddp_checkpoints_resumes_and_saves_whole_weights(workspace):
    ddp_job, ddp_file, ddp_out = start_job(workspace, "ddp")
    train(ddp_job, ddp_file, ddp_out, LOG)
    job, job_file, out_dir = start_job(workspace, "fsdp", "train.fsdp=full_shard auto_wrap")
    assert len(train(job, job_file, out_dir, LOG)) == STEPS

    # Every checkpoint complete, and FSDP's: the Trainer writes these two files only when it runs FSDP.
    run_dir = Path(job.checkpoint_dir)
    kept = sorted((p for p in run_dir.iterdir() if checkpoints.checkpoint_step(p)), key=checkpoints.checkpoint_step)
    assert [p.name for p in kept] == ["checkpoint-8", "checkpoint-12"]  # train.checkpoints_kept=2
    assert not (run_dir / checkpoints.STAGING).exists()
    for checkpoint in kept:
        assert checkpoints.verify(checkpoint) is None, checkpoint
        assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {p.name for p in checkpoint.iterdir()}, checkpoint

    fsdp, ddp = losses(out_dir), losses(ddp_out)
    assert len(fsdp) == len(ddp) == STEPS
    worst = max(abs(a - b) / a for a, b in zip(ddp, fsdp, strict=True))
    assert worst < STEP_TOLERANCE, (worst, ddp, fsdp)

    # Whole tensors, the DDP model's shapes, in the checkpoint's FSDP state and in the saved model.
    ddp_weights = load_file(ddp_out / "model.safetensors")
    fsdp_state = torch.load(kept[-1] / "pytorch_model_fsdp.bin", weights_only=True)
    weights = load_file(out_dir / "model.safetensors")
    for name, tensor in ddp_weights.items():
        assert fsdp_state[name].shape == weights[name].shape == tensor.shape, name
    # FSDP's gathered state no longer aliases the tied output embedding, so transformers saves it a second
    # time: redundant, equal, and tied again on loading.
    if "lm_head.weight" in weights:
        assert torch.equal(weights["lm_head.weight"], weights["transformer.wte.weight"])
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    assert model.lm_head.weight is model.transformer.wte.weight
    loaded = model.state_dict()
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name

    # Lose the last checkpoint and the model: the re-run resumes from step 8 to the same weights.
    uninterrupted = workspace / "uninterrupted"
    shutil.copytree(out_dir, uninterrupted)
    shutil.rmtree(kept[-1])
    shutil.rmtree(out_dir)
    out_dir.mkdir()
    assert len(train(job, job_file, out_dir, LOG)) == STEPS - 8
    resumed, reference = load_file(out_dir / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    metrics = json.loads((out_dir / "train_metrics.json").read_text())
    assert metrics["train_steps"] == STEPS and metrics["world_size"] == 2
