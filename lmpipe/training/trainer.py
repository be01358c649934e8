"""The Hugging Face Trainer, with two changes: checkpoints appear whole or not at all, and the loss
it logs is the mean over the tokens the model was actually scored on.

Checkpoints: the Trainer writes `checkpoint-N` in place, so a kill mid-write leaves a directory
that looks usable. Here it writes into a staging directory, a manifest of every file's size and
sha256 is added last (lmpipe.training.checkpoints), and only then is it renamed.

Loss: what is logged is the mean over the tokens the model was scored on, the way evaluation
computes it; the gradient stays the Trainer's own (lmpipe.training.scored_loss says why and how).

Also, train.fsdp on CPU ranks trains with FSDP2, where accelerate alone would train with DDP.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from lmpipe.models.loss import summed_token_loss
from lmpipe.objectives import Objective
from lmpipe.training.checkpoints import STAGING, rotate, write_manifest
from lmpipe.training.scored_loss import MATCH_TOLERANCE, ScoredLoss

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
        # A model that averages its loss over its own batch (RoBERTa's masked-LM head: it takes the Trainer's
        # token count and ignores it) makes a split global batch's gradient a mean of per-part means: with
        # masks, each rank and each accumulated batch scores a different number of tokens. There the loss
        # for the gradient is computed here instead, per token of the whole global batch, so N ranks train
        # exactly as one does (tests/integration/test_distributed.py).
        self._split_batch = self.args.world_size > 1 or self.args.gradient_accumulation_steps > 1
        self._model_ignores_items: bool | None = None  # learnt on the first batch that can tell
        self.earlier_seconds = 0.0  # training time of the attempts before, up to the checkpoint resumed from
        self._attempt_started: float | None = None

    # ------------------------------------------------------------------------ FSDP on CPU ranks

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled:
            self._enable_fsdp_on_cpu()

    def _enable_fsdp_on_cpu(self) -> None:
        """accelerate (1.15) turns FSDP on only for accelerator ranks (MULTI_GPU, MULTI_XPU, ...): on CPU ranks it
        drops the plugin and trains with DDP, silently. torch's FSDP2 itself shards on CPU with gloo, and with
        the state switched as accelerate would on a GPU, the Trainer trains, checkpoints and resumes with it
        (tests/integration/test_fsdp.py). FSDP1 is left alone: its plugin needs an accelerator to build."""
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        if state.distributed_type != DistributedType.MULTI_CPU or self.args.fsdp_plugin_args["fsdp_version"] != 2:
            return
        plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        # Both shared states: PartialState's is the one accelerate's prepare and save paths read back.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        state.distributed_type, state.fsdp_plugin = DistributedType.FSDP, plugin
        self.is_fsdp_enabled = True

    # ------------------------------------------------------------------------ loss

    def _keep_model_loss(self, module, args, kwargs, output) -> None:
        loss = output.get("loss") if isinstance(output, dict) else None
        self._model_loss = loss.detach().clone() if module.training and loss is not None else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._model_loss = None
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and "labels" in inputs:
            self.scored_loss.add_batch(self._model_loss, outputs.logits, inputs["labels"], num_items_in_batch)
            split = self._split_batch and num_items_in_batch is not None
            if split and self._ignores_items(outputs, inputs, num_items_in_batch):
                summed, _ = summed_token_loss(self.objective, outputs.logits, inputs["labels"])
                # DDP averages the ranks' gradients: times the ranks, the sum over the global batch's tokens.
                loss = summed / num_items_in_batch * self.accelerator.num_processes
                self.loss_is_scaled_for_ga = True  # per global batch already: not divided again
        return (loss, outputs) if return_outputs else loss

    def _ignores_items(self, outputs: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> bool:
        """Did the model divide its loss by its own batch's scored tokens, ignoring the Trainer's count
        for the global batch? Learnt once, on the first batch where the two counts differ."""
        if self._model_ignores_items is None and self._model_loss is not None:
            with torch.no_grad():
                exact, scored = summed_token_loss(self.objective, outputs.logits, inputs["labels"])
            counts = int(num_items_in_batch), int(scored)
            if counts[0] != counts[1]:
                mean = float(self._model_loss)
                self._model_ignores_items = math.isclose(mean * counts[1], float(exact), rel_tol=MATCH_TOLERANCE)
        return bool(self._model_ignores_items)

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
        """Every rank writes its part (model and optimizer from rank 0, or FSDP's shards; each rank's RNG
        state) into the staging directory; rank 0 alone then finishes it, once all have written."""
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"checkpoint-{self.state.global_step}"
        writer = self.is_world_process_zero()
        if writer:
            shutil.rmtree(run_dir / STAGING, ignore_errors=True)  # a save killed midway
        self.accelerator.wait_for_everyone()  # no rank writes into staging before it is clean
        self._staging_save = True
        try:
            super()._save_checkpoint(model, trial)  # writes run_dir/.staging/checkpoint-N
        finally:
            self._staging_save = False
        totals = self.run_totals()  # a collective under DDP: every rank takes part
        self.accelerator.wait_for_everyone()  # every rank's files are written
        if writer:
            staged = run_dir / STAGING / final.name
            (staged / RUN_TOTALS_FILE).write_text(json.dumps(totals))
            write_manifest(staged)  # last: a checkpoint without it was never finished
            shutil.rmtree(final, ignore_errors=True)  # a stale one of the same step, from an earlier attempt
            staged.rename(final)
            shutil.rmtree(run_dir / STAGING, ignore_errors=True)
            rotate(run_dir, self._checkpoints_kept)
            if self._on_checkpoint is not None:
                self._on_checkpoint(final)
        self.accelerator.wait_for_everyone()  # no rank goes on before the checkpoint is whole
