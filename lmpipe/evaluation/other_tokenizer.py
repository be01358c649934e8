"""One evaluation text for two tokenizers: a causal LM that reads another tokenizer, scored on the text of
this run's test blocks.

When the champion reads another tokenizer, it cannot score this run's blocks (their ids are another
vocabulary's), and the perplexities are per different tokens. So the gate (lmpipe.registry.promotion)
compares bits per byte on one text: the text of the candidate's evaluated test blocks, re-cut for the
champion.

- Each candidate block is one unit of text, as it was for the candidate: its runs of ordinary tokens
  are decoded and encoded again with the other tokenizer, and its special tokens become the other
  tokenizer's token of the same role (`</s>` its end of sequence, `<s>` its start; one with no
  counterpart is left out, and two boundaries that map to one token, as GPT-2's single
  `<|endoftext|>`, become one). So both models see the same documents with the same boundaries.
- A unit longer than the other model's blocks is cut into blocks of that size (`block_size`, the
  length it was trained on: positions past it were never trained, and would handicap it), each
  scored on all its tokens but the first, as evaluation scores any block.

Bits per byte divides each model's summed loss by the bytes of the text it was scored on, so the
few bytes that differ (each block's first token, which nothing predicts, is a different piece of
text under each tokenizer; a character a block boundary cut in two decodes as U+FFFD) shift the
denominator and the numerator together and do not bias the comparison.
"""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

# Special tokens matched by role, in this order: a token that plays two roles takes the first.
ROLES = ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "mask_token_id")


def special_token_map(source: PreTrainedTokenizerBase, target: PreTrainedTokenizerBase) -> dict[int, int | None]:
    """Each special id of `source` -> the id of the `target` token with the same role, or None (left out)."""
    mapping: dict[int, int | None] = dict.fromkeys(source.all_special_ids)
    for role in ROLES:
        source_id, target_id = getattr(source, role, None), getattr(target, role, None)
        if source_id is not None and target_id is not None and mapping.get(source_id) is None:
            mapping[source_id] = target_id
    return mapping


def retokenized_unit(
    ids: list[int],
    source: PreTrainedTokenizerBase,
    target: PreTrainedTokenizerBase,
    specials: dict[int, int | None],
) -> list[int]:
    """One block of `source` ids (padding already removed) as `target` ids for the same text."""
    pieces: list[str | int] = []  # decoded text runs, and mapped special ids, in order
    run: list[int] = []
    for token_id in ids:
        if token_id not in specials:
            run.append(token_id)
            continue
        if run:
            pieces.append(source.decode(run, clean_up_tokenization_spaces=False))
            run = []
        mapped = specials[token_id]
        if mapped is not None and not (pieces and pieces[-1] == mapped):  # `</s><s>` -> one <|endoftext|>
            pieces.append(mapped)
    if run:
        pieces.append(source.decode(run, clean_up_tokenization_spaces=False))
    texts = [piece for piece in pieces if isinstance(piece, str)]
    encoded = iter(target(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [])
    out: list[int] = []
    for piece in pieces:
        out.extend(next(encoded) if isinstance(piece, str) else [piece])
    return out


def retokenized_blocks(
    blocks: Dataset, source: PreTrainedTokenizerBase, target: PreTrainedTokenizerBase, block_size: int
) -> Dataset:
    """The text of `blocks` (ids of `source`) as causal-LM blocks of `target` ids, at most block_size long.

    Padded to block_size with attention_mask 0 (never scored); a piece of one token, which nothing would
    be scored on, is left out."""
    specials = special_token_map(source, target)
    pad = target.pad_token_id if target.pad_token_id is not None else 0
    columns = [c for c in ("input_ids", "attention_mask") if c in blocks.column_names]
    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
    for block in blocks.select_columns(columns):
        mask = block.get("attention_mask") or [1] * len(block["input_ids"])
        ids = [int(token_id) for token_id, keep in zip(block["input_ids"], mask, strict=True) if keep]
        unit = retokenized_unit(ids, source, target, specials)
        for start in range(0, len(unit), block_size):
            piece = unit[start : start + block_size]
            if len(piece) < 2:
                continue
            padding = block_size - len(piece)
            rows["input_ids"].append(piece + [pad] * padding)
            rows["attention_mask"].append([1] * len(piece) + [0] * padding)
    return Dataset.from_dict(rows)
