"""The Hugging Face Trainer loop both objectives share: arguments, progress, saving, metrics.

What differs between CLM and MLM (model class, collator, tokenizer checks) stays in
tasks/train_clm.py and tasks/train_mlm.py; this is only the part that is truly the same.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)

from lmpipe import checkpoints, throughput
from lmpipe.artifacts import ensure_built
from lmpipe.config import ModelConfig, PipelineConfig, TrainConfig
from lmpipe.devices import DevicePlan
from lmpipe.errors import PipelineInputError
from lmpipe.models import count_parameters
from lmpipe.training_process import ProgressCallback, emit, run_training_process


class LossGuard(TrainerCallback):
    """Stops a diverged run at the first logging step whose loss is NaN or infinite (so within
    train.logging_steps steps), with an error that is not retried and registers nothing."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise PipelineInputError(
                f"training diverged: loss is {loss} at step {state.global_step}; nothing is registered "
                f"(lower train.learning_rate={args.learning_rate:g}?)"
            )


# Train settings that change what we see or how a run recovers, never the trained weights.
NOT_TRAINED_BY = {"logging_steps", "checkpoint_steps", "checkpoints_kept", "dataloader_workers", "pin_memory"}


def dataloader_workers(train: TrainConfig, plan: DevicePlan) -> int:
    """Batch-preparing processes: set, or enough to feed a GPU; none on a CPU, whose cores train."""
    if train.dataloader_workers is not None:
        return train.dataloader_workers
    return max(0, min(4, plan.cpu_threads - 1)) if plan.device == "cuda" else 0


def pin_memory(train: TrainConfig, plan: DevicePlan) -> bool:
    return train.pin_memory if train.pin_memory is not None else plan.device == "cuda"


def training_arguments(train: TrainConfig, output_dir: Path, plan: DevicePlan) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device != "cuda",
        seed=train.seed,
        logging_steps=train.logging_steps,
        # The default filter replaces a NaN or inf step loss by the running mean: LossGuard must see it.
        logging_nan_inf_filter=False,
        eval_strategy="no",  # evaluate is its own stage, with a token-weighted perplexity
        save_strategy="steps" if train.checkpoint_steps else "no",
        save_steps=train.checkpoint_steps or 500,
        save_total_limit=None,  # AtomicCheckpointTrainer keeps train.checkpoints_kept complete ones
        report_to=[],  # MLflow logging is the register stage's job
        disable_tqdm=True,  # progress goes to the Prefect log instead
        # Workers and pinned memory keep a GPU fed; on a CPU the workers would take the cores training needs.
        dataloader_num_workers=dataloader_workers(train, plan),
        dataloader_pin_memory=pin_memory(train, plan),
        # Not persistent: workers start each epoch with the collator's current epoch, so MLM masks stay
        # those of an uninterrupted single-process run (lmpipe.masking).
        dataloader_persistent_workers=False,
        torch_compile=train.compile,
    )


def train_and_save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_blocks: Dataset,
    collator: DataCollatorForLanguageModeling,
    model_config: ModelConfig,
    train: TrainConfig,
    block_size: int,
    plan: DevicePlan,
    out_dir: Path,
    checkpoint_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train (resuming from the latest complete checkpoint in checkpoint_dir, if any), then save
    model (safetensors) + tokenizer + metrics + the config that made them in out_dir."""
    emit("model", parameters=count_parameters(model), train_blocks=len(train_blocks))
    tokens_per_step = train.batch_size * train.grad_accum * block_size
    trainer = checkpoints.AtomicCheckpointTrainer(
        model=model,
        args=training_arguments(train, checkpoint_dir, plan),
        train_dataset=train_blocks,
        data_collator=collator,
        callbacks=[ProgressCallback(tokens_per_step), LossGuard(), *callbacks],
        checkpoints_kept=train.checkpoints_kept,
        on_checkpoint=lambda path: emit("checkpoint", path=str(path), step=checkpoints.checkpoint_step(path)),
    )
    resume_from = checkpoints.latest_complete(checkpoint_dir, warn=lambda message: emit("warning", message=message))
    if resume_from is not None:
        emit("resume", path=str(resume_from), step=checkpoints.checkpoint_step(resume_from))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    runtime_s = time.perf_counter() - started
    metrics = {
        "train_loss": result.training_loss,
        "train_steps": result.global_step,
        "train_tokens": result.global_step * tokens_per_step,
        "train_runtime_s": round(runtime_s, 2),
        "train_tokens_per_s": round(result.global_step * tokens_per_step / max(runtime_s, 1e-9), 1),
        "parameters": count_parameters(model),
        "device": plan.describe(),
    }
    if plan.device == "cuda":  # MFU only where there is a measured peak to hold it against
        per_token, peak = throughput.flops_per_token(model, block_size), throughput.measured_peak_flops()
        metrics.update(
            flops_per_token=per_token,
            peak_flops=peak,
            train_mfu=round(throughput.mfu(per_token, metrics["train_tokens_per_s"], peak), 4),
        )
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    # The loss and learning-rate curve, one point per logging step, for the MLflow run page.
    history = [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    (out_dir / "train_history.json").write_text(json.dumps(history, indent=2))
    # The resolved config travels inside the checkpoint, as nanoGPT does.
    (out_dir / "pipeline_config.json").write_text(
        json.dumps(
            {"model": model_config.model_dump(), "train": train.model_dump(), "block_size": block_size}, indent=2
        )
    )
    emit("done", **metrics)
    return metrics


# ---------------------------------------------------------------------------- the job a task hands its child


def training_job(
    blocks_dir: str, tokenize_dir: str, model: ModelConfig, train: TrainConfig, block_size: int, checkpoint_dir: Path
) -> dict:
    """Everything the training process needs, as JSON: what the task writes and the child reads."""
    return {
        "blocks_dir": blocks_dir,
        "tokenizer_dir": str(Path(tokenize_dir) / "tokenizer"),
        "model": model.model_dump(),
        "train": train.model_dump(),
        "block_size": block_size,
        "checkpoint_dir": str(checkpoint_dir),
    }


def checkpoint_dir_for(artifacts_root: str, out_dir: Path) -> Path:
    """Checkpoints of one training artifact, under the artifact root, beside (never inside) its scratch
    directory: they must outlive a killed attempt, and only the pipeline ever writes there."""
    return Path(artifacts_root).expanduser().resolve() / "checkpoints" / out_dir.parent.name / out_dir.name


def train_in_child(module: str, label: str, job: dict[str, Any], out_dir: Path, log: Any) -> None:
    """Run `python -m <module>` on `job`, writing into out_dir; raises if training fails."""
    job_file = out_dir / "job.json"
    run_training_process(module, {**job, "out_dir": str(out_dir)}, job_file, log, label)
    job_file.unlink()  # it names the scratch directory; the artifact's manifest records the inputs


def train_once(
    stage: str, out: Path, blocks_dir: str, tokenize_dir: str, model: ModelConfig, config: PipelineConfig, log: Any
) -> None:
    """A training task's body: train `stage` ('train-clm' -> python -m tasks.train_clm) into `out`
    unless it is built; resume from, and once published delete, the checkpoints keyed like it."""
    checkpoint_dir = checkpoint_dir_for(config.artifacts.root, out)
    job = training_job(blocks_dir, tokenize_dir, model, config.train, config.data.block_size, checkpoint_dir)
    module = "tasks." + stage.replace("-", "_")
    if ensure_built(out, stage, job, lambda scratch: train_in_child(module, stage, job, scratch, log), log):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the trained model is published: nothing to resume


def run_job(train: Callable[..., dict[str, Any]], job: dict[str, Any]) -> None:
    """The child's side: call train_causal_lm / train_masked_lm with the job's fields."""
    train(
        Path(job["blocks_dir"]),
        Path(job["tokenizer_dir"]),
        ModelConfig(**job["model"]),
        TrainConfig(**job["train"]),
        job["block_size"],
        Path(job["out_dir"]),
        Path(job["checkpoint_dir"]),
    )
