"""train-clm and train-mlm: train a model on the blocks with the Hugging Face Trainer, in a child process.

Two Prefect tasks, as users see them in the UI, made from one implementation: what differs between
the objectives is in lmpipe.objectives. The work is lmpipe.training (launcher and worker).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger, task

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective, spec_of
from lmpipe.orchestration.caching import cached_stage
from lmpipe.orchestration.reports import TrainingProgress
from lmpipe.store.code_version import code_version
from lmpipe.store.keys import artifact_dir, artifact_path, artifact_ref
from lmpipe.store.usage import mark_used
from lmpipe.training.job import NOT_TRAINED_BY
from lmpipe.training.placement import placement_of

LIBRARIES = ("torch", "transformers", "accelerate")  # the libraries that shape this stage's output


def training_inputs(blocks_dir: str, tokenize_dir: str, config: PipelineConfig, objective: Objective) -> dict:
    """Everything that decides a training artifact's weights: its cache key."""
    # The masked share of tokens trains only a masked LM.
    not_trained_by = NOT_TRAINED_BY | ({"mlm_probability"} if not spec_of(objective).masked else set())
    placement = placement_of(config.train)  # `auto` trains in bf16 on some machines, fp32 on others
    return {
        "blocks": Path(blocks_dir).name,
        "tokenizer": Path(tokenize_dir).name,
        "model": getattr(config.model, objective).model_dump(),
        # Logging and checkpointing change what we see and how we recover, not what is trained.
        "train": config.train.model_dump(exclude=not_trained_by),
        "device": {"type": placement.device, "precision": placement.precision},
        # Ranks change the global batch and the reduction order; `processes: auto` resolves per machine.
        "world_size": placement.world_size,
        "code": code_version(__name__, LIBRARIES),
    }


def train_output_dir(blocks_dir: str, tokenize_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    inputs = training_inputs(blocks_dir, tokenize_dir, config, objective)
    return artifact_dir(config.artifacts.root, spec_of(objective).train_stage, inputs)


def checkpoint_dir(blocks_dir: str, tokenize_dir: str, config: PipelineConfig, objective: Objective) -> Path:
    """Where this training's checkpoints go: keyed by its trajectory, the training key without how the global
    batch is split. The data order does not depend on it (each step trains the same blocks however many
    ranks share them), so a run pre-empted on 8 GPUs resumes on 4 at the same global batch."""
    inputs = training_inputs(blocks_dir, tokenize_dir, config, objective)
    train = dict(inputs["train"])
    global_batch = train.pop("batch_size") * train.pop("grad_accum") * inputs.pop("world_size")
    trajectory = {**inputs, "train": train, "global_batch": global_batch}
    return artifact_dir(config.artifacts.root, "checkpoints", {"stage": spec_of(objective).train_stage, **trajectory})


def train(blocks_dir: str, tokenize_dir: str, config: PipelineConfig, objective: Objective) -> str:
    """The body of both training tasks; returns the reference of the saved model's artifact."""
    # Imported here, not at the top: a cached run computes keys only (torch alone, for the device), and never
    # loads transformers.
    from lmpipe.training.launcher import train_once

    out = train_output_dir(blocks_dir, tokenize_dir, config, objective)
    checkpoints = checkpoint_dir(blocks_dir, tokenize_dir, config, objective)
    progress = TrainingProgress(spec_of(objective).train_stage)
    blocks, tokens = (str(artifact_path(config.artifacts.root, ref)) for ref in (blocks_dir, tokenize_dir))
    train_once(objective, out, checkpoints, blocks, tokens, config, get_run_logger(), progress.update)
    mark_used(out)
    return artifact_ref(out)


@task(name=spec_of("clm").train_stage, **cached_stage(partial(train_output_dir, objective="clm")))
def train_clm(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> str:
    """Train the causal LM (GPT-2 family) in a child process; returns the directory of the saved model."""
    return train(blocks_dir, tokenize_dir, config, "clm")


@task(name=spec_of("mlm").train_stage, **cached_stage(partial(train_output_dir, objective="mlm")))
def train_mlm(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> str:
    """Train the masked LM (RoBERTa family) in a child process; returns the directory of the saved model."""
    return train(blocks_dir, tokenize_dir, config, "mlm")


TRAIN_TASKS = {"clm": train_clm, "mlm": train_mlm}
