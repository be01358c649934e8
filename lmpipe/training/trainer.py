"""The Hugging Face Trainer, with two changes: checkpoints appear whole or not at all, and the loss
it logs is the mean over the tokens the model was actually scored on.

Checkpoints: the Trainer writes `checkpoint-N` in place, so a kill mid-write leaves a directory
that looks usable. Here it writes into a staging directory, a manifest of every file's size and
sha256 is added last (lmpipe.training.checkpoints), and only then is it renamed.

Loss: transformers 5.23 divides a GPT-2 block's summed loss by all T of its labels, though the
model scores T-1 of them (it shifts labels), so the loss it logs is (T-1)/T of the true mean
(127/128 for the guide's blocks). The gradient keeps the Trainer's own scaling, so the trained
weights stay exactly those of run_clm.py; only what is reported changes. The loss reported here
is recomputed from the same logits (lmpipe.models.loss), summed over the scored tokens and
divided by their count, the way evaluation computes it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from lmpipe.models.loss import summed_token_loss
from lmpipe.objectives import Objective
from lmpipe.training.checkpoints import STAGING, rotate, write_manifest

SCORED_LOSS_FILE = "lmpipe-scored-loss.json"  # in each checkpoint: the loss sums so far, for a resumed run


class ScoredLoss:
    """Running sums of the summed loss and the scored tokens: since the last log, and since step 0."""

    def __init__(self) -> None:
        self.interval_sum = self.interval_tokens = self.total_sum = self.total_tokens = 0.0
        # (loss sum, tokens) not yet read, in float64 on the batches' device: reading waits for the device,
        # so it happens once per log, not once per batch.
        self._pending: torch.Tensor | None = None

    def add(self, loss_sum: torch.Tensor, tokens: torch.Tensor) -> None:
        step = torch.stack([loss_sum.detach().double(), tokens.detach().double()])
        self._pending = step if self._pending is None else self._pending + step

    def _settle(self) -> None:
        if self._pending is None:
            return
        value, count = self._pending.tolist()
        self._pending = None
        self.interval_sum += value
        self.interval_tokens += count
        self.total_sum += value
        self.total_tokens += count

    def interval_mean(self) -> float:
        """Mean loss per scored token since the last call; starts a new interval."""
        self._settle()
        mean = self.interval_sum / self.interval_tokens if self.interval_tokens else float("nan")
        self.interval_sum = self.interval_tokens = 0.0
        return mean

    def overall_mean(self) -> float:
        self._settle()
        return self.total_sum / self.total_tokens if self.total_tokens else float("nan")

    def state(self) -> dict[str, float]:
        self._settle()
        return {k: getattr(self, k) for k in ("interval_sum", "interval_tokens", "total_sum", "total_tokens")}

    def restore(self, state: dict[str, float]) -> None:
        self._pending = None
        for key, value in state.items():
            setattr(self, key, float(value))


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
        self.scored_loss = ScoredLoss()
        self._checkpoints_kept = checkpoints_kept
        self._on_checkpoint = on_checkpoint
        self._staging_save = False

    # ------------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and "labels" in inputs:
            with torch.no_grad():
                self.scored_loss.add(*summed_token_loss(self.objective, outputs.logits, inputs["labels"]))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a logging step: the mean over the tokens scored since the last one
            logs["loss"] = self.scored_loss.interval_mean()
        if "train_loss" in logs:  # the end of training: the mean over every token scored
            logs["train_loss"] = self.scored_loss.overall_mean()
        super().log(logs, *args, **kwargs)

    def resume_scored_loss(self, checkpoint: Path) -> None:
        """The loss sums a checkpoint recorded, so a resumed run reports the loss of the whole run."""
        saved = checkpoint / SCORED_LOSS_FILE
        if saved.is_file():
            self.scored_loss.restore(json.loads(saved.read_text()))

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
        (staged / SCORED_LOSS_FILE).write_text(json.dumps(self.scored_loss.state()))
        write_manifest(staged)  # last: a checkpoint without it was never finished
        shutil.rmtree(final, ignore_errors=True)  # a stale one of the same step, from an earlier attempt
        staged.rename(final)
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)
        rotate(run_dir, self._checkpoints_kept)
        if self._on_checkpoint is not None:
            self._on_checkpoint(final)
