"""Blocks into labelled batches, one collator per objective: where labels come from, and what the loss skips.

Causal LM: labels are the inputs wherever the attention mask is 1 (the model shifts them by one),
so every real token is a target, the end-of-document token included, even when a tokenizer's pad
token is its EOS (GPT-2's). transformers' own `DataCollatorForLanguageModeling(mlm=False)` decides
by token id instead, and with such a tokenizer drops every EOS from the loss, although packed
blocks hold no padding at all.

Masked LM: a share of the tokens is masked, and only those are targets. Masks are drawn so that a
resumed run draws exactly what an uninterrupted one would (ResumableMaskingCollator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, TrainerCallback

from lmpipe.objectives import Objective, spec_of

IGNORE_INDEX = -100  # label value the loss skips

Collator = Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]


class NextTokenCollator:
    """Causal-LM batches: stacked blocks, labels = input ids where attended, IGNORE_INDEX on padding."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor([example["input_ids"] for example in examples], dtype=torch.long)  # (batch, block)
        if examples and "attention_mask" in examples[0]:  # only blocks with padding (data.remainder=pad) store one
            attention_mask = torch.tensor([example["attention_mask"] for example in examples], dtype=torch.long)
        else:
            attention_mask = torch.ones_like(input_ids)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)  # (batch, block); the model shifts them
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def training_batches(
    objective: Objective, tokenizer: PreTrainedTokenizerBase, mlm_probability: float, seed: int
) -> tuple[Collator, Sequence[TrainerCallback]]:
    """The collator training uses, and the Trainer callbacks it needs."""
    if not spec_of(objective).masked:
        return NextTokenCollator(), ()
    # Masks a fresh mlm_probability share of tokens every epoch; labels are IGNORE_INDEX elsewhere. Masks
    # depend on (seed, epoch, block) only, so a resumed run masks exactly as an uninterrupted one.
    collator = ResumableMaskingCollator(tokenizer, mlm_probability, seed)
    return collator, (MaskingEpochCallback(collator),)


def evaluation_batches(
    objective: Objective, tokenizer: PreTrainedTokenizerBase, mlm_probability: float, mlm_seed: int
) -> Collator:
    """The collator evaluation uses: MLM masks from a fixed seed, so one model always gets one number."""
    if not spec_of(objective).masked:
        return NextTokenCollator()
    return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability, seed=mlm_seed)


# ---------------------------------------------------------------------------- resumable MLM masks
#
# The Hugging Face collator draws masks from one generator (or torch's global one) in batch
# order. On resume the Trainer restores RNG state only after it has fetched the first batch, and
# accelerate's loader collates one batch ahead, so a resumed run masks differently from then on.
# Here each block's masks are a pure function of (seed, epoch, the block's tokens): the same
# whatever the batching, the prefetching or the restarts, and still new every epoch (dynamic
# masking, as RoBERTa trains).


class ResumableMaskingCollator(DataCollatorForLanguageModeling):
    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float, seed: int) -> None:
        super().__init__(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability)
        self.mask_seed = seed
        self.epoch = 0

    def block_generator(self, block: torch.Tensor) -> torch.Generator:
        key = f"{self.mask_seed}:{self.epoch}".encode()
        digest = hashlib.blake2b(block.cpu().numpy().tobytes(), digest_size=8, key=key).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

    def torch_mask_tokens(self, inputs: Any, special_tokens_mask: Any | None = None, offset_mapping: Any = None):
        masked, labels = [], []
        for row in range(inputs.shape[0]):  # the collator's own masking, one block at a time
            self.generator = self.block_generator(inputs[row])
            row_special = None if special_tokens_mask is None else special_tokens_mask[row : row + 1]
            row_inputs, row_labels = super().torch_mask_tokens(inputs[row : row + 1].clone(), row_special)
            masked.append(row_inputs)
            labels.append(row_labels)
        self.generator = None
        return torch.cat(masked), torch.cat(labels)


class MaskingEpochCallback(TrainerCallback):
    """Tells the collator which epoch it masks for; a resumed run gets it from the restored state."""

    def __init__(self, collator: ResumableMaskingCollator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch or 0)
