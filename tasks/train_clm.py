"""train-clm: train a causal LM (GPT-2 family) on the grouped blocks with the Hugging Face Trainer.

The task launches `python -m tasks.train_clm job.json` and watches it (see
lmpipe.training_process); `train_causal_lm` is the plain function that process runs, and that
tests call directly.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from datasets import load_from_disk
from prefect import get_run_logger, task
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from lmpipe import models, training_process
from lmpipe.artifacts import artifact_dir, building, cached_stage, code_version, is_complete
from lmpipe.config import ModelConfig, PipelineConfig, TrainConfig
from lmpipe.devices import plan_device, use_planned_threads
from lmpipe.training_process import ProgressCallback, child_main, emit


def training_arguments(train: TrainConfig, output_dir: Path, on_cuda: bool, precision: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_cuda,
        seed=train.seed,
        logging_steps=train.logging_steps,
        eval_strategy="no",  # evaluate is its own stage, with a token-weighted perplexity
        save_strategy="no",
        report_to=[],  # MLflow logging is the register stage's job
        disable_tqdm=True,  # progress goes to the Prefect log instead
        dataloader_num_workers=0,
    )


def train_causal_lm(blocks_dir: Path, tokenizer_dir: Path, model_config: ModelConfig, train: TrainConfig,
                    block_size: int, out_dir: Path) -> dict[str, Any]:
    """Train from the base model and save it (safetensors) with its tokenizer in out_dir."""
    plan = plan_device(train.precision)
    use_planned_threads(plan)
    emit("device", device=plan.describe())
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; the guide uses eos
    blocks = load_from_disk(str(blocks_dir / "dataset"))
    model = models.build_base_model("clm", model_config, tokenizer, train.seed, block_size)
    emit("model", parameters=models.count_parameters(model), train_blocks=len(blocks["train"]))

    tokens_per_step = train.batch_size * train.grad_accum * block_size
    trainer = Trainer(
        model=model,
        args=training_arguments(train, out_dir / "trainer", plan.device == "cuda", plan.precision),
        train_dataset=blocks["train"],
        # mlm=False: labels are the inputs, shifted inside the model; padding is masked out.
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        callbacks=[ProgressCallback(tokens_per_step)],
    )
    started = time.perf_counter()
    result = trainer.train()
    trainer.save_model(str(out_dir))  # safetensors
    tokenizer.save_pretrained(str(out_dir))
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    metrics = {
        "train_loss": result.training_loss,
        "train_steps": result.global_step,
        "train_tokens": result.global_step * tokens_per_step,
        "train_runtime_s": round(time.perf_counter() - started, 2),
        "parameters": models.count_parameters(model),
        "device": plan.describe(),
    }
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "pipeline_config.json").write_text(json.dumps(
        {"model": model_config.model_dump(), "train": train.model_dump(), "block_size": block_size}, indent=2))
    emit("done", **metrics)
    return metrics


def _train_from_job(job: dict[str, Any]) -> None:
    train_causal_lm(Path(job["blocks_dir"]), Path(job["tokenizer_dir"]), ModelConfig(**job["model"]),
                    TrainConfig(**job["train"]), job["block_size"], Path(job["out_dir"]))


# ---------------------------------------------------------------------------- task


def train_clm_output_dir(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> Path:
    inputs = {
        "blocks": Path(blocks_dir).name,
        "tokenizer": Path(tokenize_dir).name,
        "model": config.model.clm.model_dump(),
        # logging_steps changes what we see, not what is trained.
        "train": config.train.model_dump(exclude={"logging_steps", "mlm_probability"}),
        "code": code_version(__file__, models.__file__, training_process.__file__),
    }
    return artifact_dir(config.artifacts.root, "train-clm", inputs)


@task(name="train-clm", **cached_stage(train_clm_output_dir))
def train_clm(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> str:
    """Train the causal LM in a child process; returns the directory of the saved model."""
    out = train_clm_output_dir(blocks_dir, tokenize_dir, config)
    if not is_complete(out):
        job = {
            "blocks_dir": blocks_dir,
            "tokenizer_dir": str(Path(tokenize_dir) / "tokenizer"),
            "model": config.model.clm.model_dump(),
            "train": config.train.model_dump(),
            "block_size": config.data.block_size,
        }
        with building(out, "train-clm", job) as scratch:
            training_process.run_training_process("tasks.train_clm", {**job, "out_dir": str(scratch)},
                                                  scratch / "job.json", get_run_logger(), "train-clm")
    return str(out)


if __name__ == "__main__":
    child_main(_train_from_job)
