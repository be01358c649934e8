"""The loss both training and evaluation report: summed over the tokens a model is scored on.

For a causal LM, position t is scored on token t+1, so a block of T tokens has T-1 targets.
transformers 5.23's Trainer counts T per GPT-2 block when it normalises the loss (it does not
recognise GPT-2's loss as one that shifts labels), so its logged loss is (T-1)/T of the mean, and
run_clm.py's perplexity, exp of that, is lower than this one. Both here divide by the true count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmpipe.models.batches import IGNORE_INDEX
from lmpipe.objectives import Objective, spec_of


def scored_positions(
    objective: Objective, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) lined up so that logits[i] predicts labels[i]: shifted by one for a causal LM."""
    if spec_of(objective).shifts_labels:  # token t predicts token t+1
        return logits[:, :-1], labels[:, 1:]
    return logits, labels


def summed_token_loss(
    objective: Objective, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number of scored tokens) of one batch, as 0-d tensors on the batch's device
    (reading them is what waits for the device); logits (batch, block, vocab), labels (batch, block) with
    IGNORE_INDEX where nothing is scored."""
    logits, labels = scored_positions(objective, logits, labels)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (labels != IGNORE_INDEX).sum()


def scored_token_count(objective: Objective, labels: torch.Tensor) -> torch.Tensor:
    """The number of tokens a batch is scored on, as a 0-d tensor on the batch's device: without the
    first position of each causal block, which nothing predicts."""
    if spec_of(objective).shifts_labels:
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum()
