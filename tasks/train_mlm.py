"""train-mlm: train a masked LM (RoBERTa family) on the grouped blocks with the Hugging Face Trainer.

The task launches `python -m tasks.train_mlm job.json` and watches it (see
lmpipe.training_process); `train_masked_lm` is the plain function that process runs, and that
tests call directly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from datasets import load_from_disk
from prefect import get_run_logger, task
from transformers import AutoTokenizer

from lmpipe import checkpoints, masking, models, trainer_loop, training_process
from lmpipe.artifacts import artifact_dir, cached_stage, code_version
from lmpipe.config import ModelConfig, PipelineConfig, TrainConfig
from lmpipe.devices import plan_device, use_planned_threads
from lmpipe.errors import PipelineInputError
from lmpipe.masking import MaskingEpochCallback, ResumableMaskingCollator
from lmpipe.training_process import child_main, emit
from tasks.tokenize_texts import tokenizer_origin


def train_masked_lm(
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
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))  # its mask token was checked by the task
    blocks = load_from_disk(str(blocks_dir / "dataset"))
    model = models.build_base_model("mlm", model_config, tokenizer, train.seed, block_size)

    # Masks a fresh mlm_probability share of tokens every epoch; labels are -100 elsewhere. Masks depend
    # on (seed, epoch, block) only, so a resumed run masks exactly as an uninterrupted one.
    collator = ResumableMaskingCollator(tokenizer, train.mlm_probability, train.seed)
    return trainer_loop.train_and_save(
        model,
        tokenizer,
        blocks["train"],
        collator,
        model_config,
        train,
        block_size,
        plan,
        out_dir,
        checkpoint_dir,
        callbacks=[MaskingEpochCallback(collator)],
    )


# ---------------------------------------------------------------------------- task


def train_mlm_output_dir(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> Path:
    inputs = {
        "blocks": Path(blocks_dir).name,
        "tokenizer": Path(tokenize_dir).name,
        "model": config.model.mlm.model_dump(),
        # logging_steps changes what we see, not what is trained.
        "train": config.train.model_dump(exclude=trainer_loop.NOT_TRAINED_BY),
        "code": code_version(
            __file__,
            models.__file__,
            training_process.__file__,
            trainer_loop.__file__,
            checkpoints.__file__,
            masking.__file__,
        ),
    }
    return artifact_dir(config.artifacts.root, "train-mlm", inputs)


def require_mask_token(tokenize_dir: Path, field: str) -> None:
    """Masked-LM training masks tokens: a tokenizer without a mask token (GPT-2's) cannot do it."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenize_dir / "tokenizer"))
    if tokenizer.mask_token is None or tokenizer.pad_token is None:
        raise PipelineInputError(
            f"{field}: the tokenizer has no {'mask' if tokenizer.mask_token is None else 'pad'} token, which "
            "masked-LM training needs; use a masked LM's tokenizer (e.g. RoBERTa's) or null to train one here"
        )


@task(name="train-mlm", **cached_stage(train_mlm_output_dir))
def train_mlm(blocks_dir: str, tokenize_dir: str, config: PipelineConfig) -> str:
    """Train the masked LM in a child process; returns the directory of the saved model."""
    out = train_mlm_output_dir(blocks_dir, tokenize_dir, config)
    require_mask_token(Path(tokenize_dir), tokenizer_origin(config, "mlm").field)  # before any training starts
    trainer_loop.train_once("train-mlm", out, blocks_dir, tokenize_dir, config.model.mlm, config, get_run_logger())
    return str(out)


if __name__ == "__main__":
    child_main(partial(trainer_loop.run_job, train_masked_lm))
