"""MLM masks that a resumed run draws exactly as an uninterrupted one would.

The Hugging Face collator draws masks from one generator (or torch's global one) in batch
order. On resume the Trainer restores RNG state only after it has fetched the first batch, and
accelerate's loader collates one batch ahead, so a resumed run masks differently from then on.
Here each block's masks are a pure function of (seed, epoch, the block's tokens): the same
whatever the batching, the prefetching or the restarts, and still new every epoch (dynamic
masking, as RoBERTa trains).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, TrainerCallback


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
