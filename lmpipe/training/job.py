"""What the launcher hands the training process: one JSON file, read back into the same types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.objectives import Objective

# Train settings that change what we see or how a run recovers, never the trained weights. Where the ranks
# run is not either, as such: the world size and the device it resolves to are (lmpipe.training.placement).
NOT_TRAINED_BY = {
    "logging_steps",
    "checkpoint_steps",
    "checkpoints_kept",
    "dataloader_workers",
    "pin_memory",
    "processes",
    "launcher",
    "ray_address",
    "ray_workers",
    "ray_cpus_per_worker",
    "ray_gpus_per_worker",
}


class TrainingJob(BaseModel):
    """Everything that decides the trained weights, and where to resume from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Objective
    blocks_dir: str  # the group artifact
    tokenizer_dir: str  # the tokenizer the tokenize stage saved
    model: ModelConfig
    train: TrainConfig
    block_size: int
    world_size: int = 1  # ranks training together (lmpipe.training.placement)
    checkpoint_dir: str  # resumable checkpoints, under the artifact root: they outlive a killed attempt


def job_file_content(job: TrainingJob, out_dir: Path) -> dict[str, Any]:
    """The job file: the job, and the scratch directory the trained model is saved in."""
    return {"job": job.model_dump(mode="json"), "out_dir": str(out_dir)}


def read_job_file(path: Path) -> tuple[TrainingJob, Path]:
    content = json.loads(path.read_text())
    return TrainingJob.model_validate(content["job"]), Path(content["out_dir"])
