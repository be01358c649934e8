"""Bits per byte: a causal LM's loss in a unit that compares across tokenizers.

Perplexity is per token, and a token is whatever the tokenizer says it is: a 4,096-entry BPE and a
50,257-entry one cut the same text into different numbers of tokens, so their perplexities measure
different things. Bits per byte divides the same total loss by what every tokenizer agrees on, the
text's UTF-8 bytes:

    bits_per_byte = sum over scored tokens of -log2 p(token | context) / eval_bytes

- The scored tokens are exactly those the perplexity averages over (lmpipe.models.loss): every
  attended token of a causal block but its first, which nothing predicts. Padding is never scored.
- eval_bytes is the number of UTF-8 bytes those scored tokens stand for. A special token (`<s>`,
  `</s>`) stands for no text: its loss counts (the model must predict a document's end), its bytes
  are 0.
- Byte-level BPE (GPT-2's, RoBERTa's, the BPE trained here) maps every token to exact bytes, so a
  token's bytes are read off its string through the byte <-> character table the tokenizer uses,
  and they add up exactly, even where a block boundary cuts a multi-byte character in two (decoding
  the two halves separately would count each as a 3-byte U+FFFD). Any other tokenizer's tokens have
  no bytes of their own (a SentencePiece "▁" is a space or nothing, by context), so each block's
  scored tokens are decoded together instead: len(decode(scored_ids, skip_special_tokens=True,
  clean_up_tokenization_spaces=False).encode("utf-8")).

Only the causal LM gets these numbers (metrics.json keys `bits_per_byte`, `base_bits_per_byte`,
`eval_bytes`); a masked LM's metrics have none of them (absent, not null): its pseudo-perplexity
scores the tokens a mask hid, and which pieces of text those are depends on the tokenizer.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lmpipe.models.batches import IGNORE_INDEX, Collator
from lmpipe.objectives import Objective, spec_of


def bits_per_byte(mean_loss: float, tokens: int, eval_bytes: int) -> float:
    """Total loss in bits (mean loss in nats x scored tokens / ln 2) per byte of the scored text."""
    if eval_bytes == 0:
        return float("inf")  # a model scored only on special tokens has no text to spread its loss over
    return mean_loss * tokens / math.log(2) / eval_bytes


@cache
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte <-> printable character table, inverted: each of the 256 bytes has one character."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:  # unprintable bytes are shifted past 255, in order
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.decoder, decoders.ByteLevel)


def byte_lengths(tokenizer: PreTrainedTokenizerBase) -> np.ndarray | None:
    """UTF-8 bytes each token id stands for, (vocab,); None when the tokenizer is not byte-level BPE.

    As the ByteLevel decoder reads a token: through the byte table when every character is in it,
    else its own UTF-8 (an added token such as "hello world"). Special tokens stand for no text."""
    if not is_byte_level(tokenizer):
        return None
    backend = tokenizer.backend_tokenizer
    table = _unicode_to_byte()
    lengths = np.zeros(max(backend.get_vocab_size(with_added_tokens=True), len(tokenizer)), dtype=np.int64)
    for token_id in range(len(lengths)):
        token = backend.id_to_token(token_id)
        if token is None:
            continue
        lengths[token_id] = len(token) if all(c in table for c in token) else len(token.encode("utf-8"))
    for token_id in tokenizer.all_special_ids:
        lengths[token_id] = 0
    return lengths


def scored_bytes(
    blocks: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    collator: Collator,
    objective: Objective,
    batch_size: int = 64,
) -> int:
    """UTF-8 bytes of the text the scored tokens of `blocks` stand for (the module docstring's eval_bytes).

    `collator` is the one the loss was computed with, so the bytes are counted on exactly the tokens it scored."""
    if spec_of(objective).masked:
        raise ValueError("bits per byte is defined for the causal LM only: a masked LM's targets depend on its masks")
    lengths = byte_lengths(tokenizer)
    features = blocks.select_columns([c for c in ("input_ids", "attention_mask") if c in blocks.column_names])
    total = 0
    for batch in DataLoader(features, batch_size=batch_size, collate_fn=collator, shuffle=False):
        targets = batch["labels"][:, 1:]  # (batch, block - 1): token t+1 is what position t is scored on
        if lengths is not None:
            scored = targets[targets != IGNORE_INDEX]
            total += int(lengths[scored.numpy()].sum())
            continue
        for row in targets:
            ids = row[row != IGNORE_INDEX].tolist()
            text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            total += len(text.encode("utf-8"))
    return total
