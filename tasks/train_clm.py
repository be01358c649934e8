"""train-clm: train a causal LM (GPT-2 family) on the grouped blocks with the Hugging Face Trainer.

The task launches `python -m tasks.train_clm job.json` and watches it (see
lmpipe.training_process); `train_causal_lm` is the plain function that process runs, and that
tests call directly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from datasets import load_from_disk
from prefect import get_run_logger, task
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from lmpipe import checkpoints, models, trainer_loop, training_process
from lmpipe.artifacts import artifact_dir, cached_stage, code_version
from lmpipe.config import ModelConfig, PipelineConfig, TrainConfig
from lmpipe.devices import plan_device, use_planned_threads
from lmpipe.training_process import child_main, emit


def train_causal_lm(
    blocks_dir: Path,
    tokenizer_dir: Path,
    model_config: ModelConfig,
    train: TrainConfig,
    block_size: int,
    out_dir: Path,
    checkpoint_dir: Path,
) -> dict[str, Any]:
    """Train from the base model and save it (safetensors) with its tokenizer in out_dir."""
    plan = plan_device(train.precision)
    use_planned_threads(plan)
    emit("device", device=plan.describe())
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; the guide uses eos
    blocks = load_from_disk(str(blocks_dir / "dataset"))
    model = models.build_base_model("clm", model_config, tokenizer, train.seed, block_size)

    # mlm=False: labels are the inputs, shifted inside the model; padding is masked out.
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    return trainer_loop.train_and_save(
        model, tokenizer, blocks["train"], collator, model_config, train, block_size, plan, out_dir, checkpoint_dir
    )


# ---------------------------------------------------------------------------- task


def train_clm_output_dir(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> Path:
    inputs = {
        "blocks": Path(blocks_dir).name,
        "tokenizer": Path(tokenize_dir).name,
        "model": config.model.clm.model_dump(),
        # Logging and checkpointing change what we see and how we recover, not what is trained.
        "train": config.train.model_dump(exclude=trainer_loop.NOT_TRAINED_BY | {"mlm_probability"}),
        "code": code_version(
            __file__, models.__file__, training_process.__file__, trainer_loop.__file__, checkpoints.__file__
        ),
    }
    return artifact_dir(config.artifacts.root, "train-clm", inputs)


@task(name="train-clm", **cached_stage(train_clm_output_dir))
def train_clm(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> str:
    """Train the causal LM in a child process; returns the directory of the saved model."""
    out = train_clm_output_dir(blocks_dir, tokenize_dir, config)
    trainer_loop.train_once("train-clm", out, blocks_dir, tokenize_dir, config.model.clm, config, get_run_logger())
    return str(out)


if __name__ == "__main__":
    child_main(partial(trainer_loop.run_job, train_causal_lm))
