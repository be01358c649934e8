"""The Hugging Face Trainer, with two changes: checkpoints appear whole or not at all, and the loss
it logs is the mean over the tokens the model was actually scored on.

Checkpoints: the Trainer writes `checkpoint-N` in place, so a kill mid-write leaves a directory
that looks usable. Here it writes into a staging directory, a manifest of every file's size and
sha256 is added last (lmpipe.training.checkpoints), and only then is it renamed.

Loss: what is logged is the mean over the tokens the model was scored on, the way evaluation
computes it; the gradient stays the Trainer's own (lmpipe.training.scored_loss says why and how).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from lmpipe.objectives import Objective
from lmpipe.training.checkpoints import STAGING, rotate, write_manifest
from lmpipe.training.scored_loss import ScoredLoss

# In each checkpoint: the loss sums and the training time so far, so a resumed run reports the whole run.
RUN_TOTALS_FILE = "lmpipe-run-totals.json"


class PipelineTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        objective: Objective,
        checkpoints_kept: int = 2,
        on_checkpoint: Callable[[Path], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.scored_loss = ScoredLoss(objective)
        # The model's own loss, kept as it returned it: under DDP the Trainer then scales it in place.
        self._model_loss: torch.Tensor | None = None
        self.model.register_forward_hook(self._keep_model_loss, with_kwargs=True)
        self._checkpoints_kept = checkpoints_kept
        self._on_checkpoint = on_checkpoint
        self._staging_save = False
        self.earlier_seconds = 0.0  # training time of the attempts before, up to the checkpoint resumed from
        self._attempt_started: float | None = None

    # ------------------------------------------------------------------------ loss

    def _keep_model_loss(self, module, args, kwargs, output) -> None:
        loss = output.get("loss") if isinstance(output, dict) else None
        self._model_loss = loss.detach().clone() if module.training and loss is not None else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._model_loss = None
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and "labels" in inputs:
            self.scored_loss.add_batch(self._model_loss, outputs.logits, inputs["labels"], num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a logging step: the mean over the tokens scored since the last one
            logs["loss"] = self.scored_loss.interval_mean()
        if "train_loss" in logs:  # the end of training: the mean over every token scored
            logs["train_loss"] = self.scored_loss.overall_mean()
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------------ whole-run totals

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self._attempt_started = time.perf_counter()
        return super().train(*args, **kwargs)

    def training_seconds(self) -> float:
        """Seconds spent training the steps this model has, over every attempt: the earlier attempts'
        time up to the checkpoint resumed from, plus this one's (steps lost to a kill never count)."""
        attempt = time.perf_counter() - self._attempt_started if self._attempt_started is not None else 0.0
        return self.earlier_seconds + attempt

    def run_totals(self) -> dict[str, Any]:
        return {"scored_loss": self.scored_loss.state(), "training_seconds": self.training_seconds()}

    def resume_run_totals(self, checkpoint: Path) -> None:
        """The loss sums and training time a checkpoint recorded, so a resumed run reports the whole run."""
        saved = checkpoint / RUN_TOTALS_FILE
        if saved.is_file():
            totals = json.loads(saved.read_text())
            self.scored_loss.restore(totals["scored_loss"])
            self.earlier_seconds = float(totals["training_seconds"])

    # ------------------------------------------------------------------------ checkpoints

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return str(Path(run_dir) / STAGING) if self._staging_save else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"checkpoint-{self.state.global_step}"
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)  # a save killed midway
        self._staging_save = True
        try:
            super()._save_checkpoint(model, trial)  # writes run_dir/.staging/checkpoint-N
        finally:
            self._staging_save = False
        staged = run_dir / STAGING / final.name
        (staged / RUN_TOTALS_FILE).write_text(json.dumps(self.run_totals()))
        write_manifest(staged)  # last: a checkpoint without it was never finished
        shutil.rmtree(final, ignore_errors=True)  # a stale one of the same step, from an earlier attempt
        staged.rename(final)
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)
        rotate(run_dir, self._checkpoints_kept)
        if self._on_checkpoint is not None:
            self._on_checkpoint(final)
