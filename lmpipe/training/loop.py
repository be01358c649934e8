"""One training path for both objectives, run in the training process (lmpipe.training.worker).

Load the blocks and the tokenizer, build the base model, batch with the objective's collator, train
with the Hugging Face Trainer (resuming from the latest complete checkpoint), and save the model
(safetensors), its tokenizer, the metrics and the config that made them. What differs between the
causal and the masked model comes from lmpipe.objectives through lmpipe.models.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import load_from_disk
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments

from lmpipe.compute import system_metrics, throughput
from lmpipe.compute.devices import DevicePlan, plan_device, use_planned_threads
from lmpipe.config.schema import TrainConfig
from lmpipe.errors import PipelineInputError
from lmpipe.models.base import build_base_model, count_parameters
from lmpipe.models.batches import training_batches
from lmpipe.training import checkpoints
from lmpipe.training.events import emit
from lmpipe.training.job import TrainingJob
from lmpipe.training.trainer import PipelineTrainer


class StepReporter(TrainerCallback):
    """Reports step, loss and tokens/s every logging step, to the launcher. Tokens are the Trainer's own count
    of non-padding input tokens, gathered over every rank (include_num_input_tokens_seen)."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._first_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()
        self._first_tokens = state.num_input_tokens_seen  # a resumed run starts at its checkpoint's count
        emit("begin", max_steps=state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        elapsed = time.perf_counter() - self._started
        emit(
            "step",
            step=state.global_step,
            max_steps=state.max_steps,
            loss=round(float(logs["loss"]), 4),
            learning_rate=logs.get("learning_rate"),
            tokens_per_s=round((state.num_input_tokens_seen - self._first_tokens) / max(elapsed, 1e-9)),
        )


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


def dataloader_workers(train: TrainConfig, plan: DevicePlan) -> int:
    """Batch-preparing processes: set, or enough to feed a GPU; none on a CPU, whose cores train."""
    if train.dataloader_workers is not None:
        return train.dataloader_workers
    return max(0, min(4, plan.cpu_threads - 1)) if plan.device == "cuda" else 0


def pin_memory(train: TrainConfig, plan: DevicePlan) -> bool:
    return train.pin_memory if train.pin_memory is not None else plan.device == "cuda"


def ranks() -> tuple[int, int]:
    """(world size, ranks on this node), as torchrun tells each rank; (1, 1) for a single process."""
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def distributed_arguments(train: TrainConfig, plan: DevicePlan, world: int) -> dict[str, Any]:
    """DDP (or FSDP) settings for the Trainer: only with several ranks (the backend set on a single process
    would make it initialise a process group of one)."""
    if world <= 1:
        return {}
    arguments: dict[str, Any] = {"ddp_backend": "nccl" if plan.device == "cuda" else "gloo"}
    if train.fsdp:
        arguments["fsdp"] = train.fsdp
    return arguments


def training_arguments(train: TrainConfig, output_dir: Path, plan: DevicePlan, world: int = 1) -> TrainingArguments:
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
        save_total_limit=None,  # PipelineTrainer keeps train.checkpoints_kept complete ones
        report_to=[],  # MLflow logging is the register stage's job
        include_num_input_tokens_seen="non_padding",  # counted on every rank, summed: the whole world's tokens
        disable_tqdm=True,  # progress goes to the Prefect log instead
        # Workers and pinned memory keep a GPU fed; on a CPU the workers would take the cores training needs.
        dataloader_num_workers=dataloader_workers(train, plan),
        dataloader_pin_memory=pin_memory(train, plan),
        # Not persistent: workers start each epoch with the collator's current epoch, so MLM masks stay
        # those of an uninterrupted single-process run (lmpipe.models.batches).
        dataloader_persistent_workers=False,
        torch_compile=train.compile,
        **distributed_arguments(train, plan, world),
    )


def train_model(
    job: TrainingJob, out_dir: Path, prepare: Callable[[PipelineTrainer], object] | None = None
) -> dict[str, Any]:
    """Train `job.objective` from its base model (resuming from the latest complete checkpoint in
    job.checkpoint_dir, if any), then save the model (safetensors), tokenizer, metrics and the config
    that made them in out_dir; returns the metrics."""
    train = job.train
    plan = plan_device(train.precision)
    world, local = ranks()
    if train.launcher == "ray":  # the CPUs Ray reserved for this worker, whoever else shares its node
        plan, local = replace(plan, cpu_threads=max(1, int(train.ray_cpus_per_worker))), 1
    use_planned_threads(plan, local)
    emit("device", device=plan.describe(world))
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    if tokenizer.pad_token is None:
        # As the guide does for GPT-2: the registered pipeline can then batch prompts. Labels never
        # depend on it (lmpipe.models.batches).
        tokenizer.pad_token = tokenizer.eos_token
    train_blocks = load_from_disk(str(Path(job.blocks_dir) / "dataset"))["train"]
    model = build_base_model(job.objective, job.model, tokenizer, train.seed, job.block_size)
    collator, callbacks = training_batches(job.objective, tokenizer, train.mlm_probability, train.seed)
    emit("model", parameters=count_parameters(model), train_blocks=len(train_blocks))

    checkpoint_dir = Path(job.checkpoint_dir)
    trainer = PipelineTrainer(
        model=model,
        args=training_arguments(train, checkpoint_dir, plan, world),
        train_dataset=train_blocks,
        data_collator=collator,
        callbacks=[StepReporter(), LossGuard(), *callbacks],
        objective=job.objective,
        checkpoints_kept=train.checkpoints_kept,
        on_checkpoint=lambda path: emit("checkpoint", path=str(path), step=checkpoints.checkpoint_step(path)),
    )
    if prepare is not None:  # a launcher's own integration (Ray Train's prepare_trainer)
        prepare(trainer)
    resume_from = checkpoints.latest_complete(checkpoint_dir, warn=lambda message: emit("warning", message=message))
    if resume_from is not None:
        emit("resume", path=str(resume_from), step=checkpoints.checkpoint_step(resume_from))
        trainer.resume_run_totals(resume_from)
    gpu_busy = system_metrics.current_gpu_utilization() if plan.device == "cuda" else None
    with gpu_busy or nullcontext():
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(out_dir))  # every rank takes part (FSDP gathers the shards); rank 0 writes
    runtime_s = trainer.training_seconds()  # the whole run's, over every attempt
    metrics = {
        "train_loss": trainer.scored_loss.overall_mean(),  # over every rank's tokens
        "train_steps": result.global_step,
        "train_tokens": trainer.state.num_input_tokens_seen,  # every attempt's, as checkpoints carry the count
        "train_runtime_s": round(runtime_s, 2),
        "train_tokens_per_s": round(trainer.state.num_input_tokens_seen / max(runtime_s, 1e-9), 1),
        "parameters": count_parameters(model),
        "device": plan.describe(world),
        "world_size": world,
        "peak_host_memory_mb": system_metrics.peak_host_memory_mb(),  # this rank's (lmpipe.compute.system_metrics)
    }
    if gpu_busy is not None:  # before the peak FLOPs measurement below, whose matrices are no part of training
        gpu, warning = system_metrics.gpu_metrics(gpu_busy)
        metrics.update(gpu)
        if warning:
            emit("warning", message=warning)
    if plan.device == "cuda":  # MFU only where there is a measured peak to hold it against
        per_token, peak = throughput.flops_per_token(model, job.block_size), throughput.measured_peak_flops()
        metrics.update(
            flops_per_token=per_token,
            peak_flops=peak * world,  # every rank's GPU
            train_mfu=round(throughput.mfu(per_token, metrics["train_tokens_per_s"], peak * world), 4),
        )
    if trainer.is_world_process_zero():  # one writer for the files beside the model
        tokenizer.save_pretrained(str(out_dir))
        save_records(out_dir, metrics, trainer.state.log_history, job)
    emit("done", **metrics)
    return metrics


def save_records(out_dir: Path, metrics: dict[str, Any], log_history: list[dict[str, Any]], job: TrainingJob) -> None:
    """train_metrics.json, the loss curve and the config that made the model, beside it."""
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    # The loss and learning-rate curve, one point per logging step, for the MLflow run page.
    history = [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in log_history
        if "loss" in entry
    ]
    (out_dir / "train_history.json").write_text(json.dumps(history, indent=2))
    # The resolved config travels with the model, as nanoGPT saves it inside its checkpoint.
    resolved = {"model": job.model.model_dump(), "train": job.train.model_dump(), "block_size": job.block_size}
    (out_dir / "pipeline_config.json").write_text(json.dumps(resolved, indent=2))
