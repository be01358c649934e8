"""The training loss as reported: summed over the tokens a model is scored on, divided by their count.

transformers 5.23 divides a GPT-2 block's summed loss by all T of its labels, though the model
scores T-1 of them (it shifts labels), so the loss it logs is (T-1)/T of the true mean (127/128
for the guide's blocks). The gradient keeps the Trainer's own scaling, so the trained weights stay
exactly those of run_clm.py; only what is reported changes.

The summed loss of a batch is read off the loss the model itself returned, multiplied back by what
the model divided it by. Recomputing the cross-entropy from the logits every batch costs as much as
the model's own loss: 18% of a step for the default model on a CPU (medians of 3 alternated runs of
150 steps: 21.3 s against 17.5 s). So it is recomputed once, on the first batch, to learn which
count the model divided by: the tokens it scored in the batch (a mean, as RoBERTa's masked-LM head
computes it) or the Trainer's num_items_in_batch (GPT-2 takes it). A model whose loss matches
neither, such as one that adds an auxiliary loss, is recomputed on every batch instead.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from lmpipe.models.loss import scored_token_count, summed_token_loss
from lmpipe.objectives import Objective

Divisor = Literal["scored", "items", "recompute"]
# The model's loss times the count must give the recomputed sum to this relative error: far below
# the gap between T and T-1 labels for any block up to ~10k tokens, far above float32 rounding.
MATCH_TOLERANCE = 1e-5


def learn_divisor(exact_sum: float, model_loss: float, scored: int, items: int | None) -> Divisor:
    """Which count `model_loss` is `exact_sum` divided by; "recompute" when that cannot be told."""
    counts: dict[Divisor, int] = {"scored": scored}
    if items is not None:
        counts["items"] = items
    matching = [
        name
        for name, count in counts.items()
        if math.isclose(model_loss * count, exact_sum, rel_tol=MATCH_TOLERANCE, abs_tol=1e-9)
    ]
    if len({counts[name] for name in matching}) != 1:  # none, or two different counts both within rounding
        return "recompute"
    return matching[0]


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ScoredLoss:
    """Running sums of the summed loss and the scored tokens: since the last log, and since step 0."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.divisor: Divisor | None = None  # learnt on the first batch
        self.interval_sum = self.interval_tokens = self.total_sum = self.total_tokens = 0.0
        # (loss sum, tokens) not yet read, in float64 on the batches' device: reading waits for the device,
        # so it happens once per log, not once per batch.
        self._pending: torch.Tensor | None = None

    @torch.no_grad()
    def add_batch(
        self,
        model_loss: torch.Tensor | None,
        logits: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None,
    ) -> None:
        """One training batch: the loss the model returned for it (before the Trainer scaled it), its logits
        and labels, and the Trainer's count of label tokens across the accumulated batch, if it made one."""
        scored = scored_token_count(self.objective, labels)
        if model_loss is not None and self.divisor is None:  # the first batch: learn the divisor
            exact, _ = summed_token_loss(self.objective, logits, labels)
            items = None if num_items_in_batch is None else int(num_items_in_batch)
            self.divisor = learn_divisor(exact.item(), model_loss.item(), int(scored), items)
            self._add(exact, scored)
            return
        count = {"scored": scored, "items": num_items_in_batch}.get(self.divisor) if model_loss is not None else None
        if count is None:  # no loss from the model, a divisor that cannot be told, or no count from the Trainer
            self._add(*summed_token_loss(self.objective, logits, labels))
            return
        self._add(model_loss.double() * count, scored)

    def _add(self, loss_sum: torch.Tensor, tokens: torch.Tensor) -> None:
        step = torch.stack([loss_sum.detach().double(), torch.as_tensor(tokens, device=loss_sum.device).double()])
        self._pending = step if self._pending is None else self._pending + step

    def _settle(self) -> None:
        """Move what is pending into the sums: under DDP, every rank's, so each rank holds the totals of all.
        A collective: every rank calls it at the same points (each log, each checkpoint, the end)."""
        pending = self._pending
        if _distributed():
            import torch.distributed as dist

            if pending is None:
                on_gpu = dist.get_backend() == "nccl"
                device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
                pending = torch.zeros(2, dtype=torch.float64, device=device)
            dist.all_reduce(pending)
        if pending is None:
            return
        value, count = pending.tolist()
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
