"""Which train rows the BPE tokenizer learns from: a deterministic sample within tokenizer.train_sample.

Training a BPE costs time in proportion to its text, and its merges settle long before a 100 GB corpus
ends. Each row is kept or not by a seeded hash of its index in the split, so the same split gives the
same sample, and so the same tokenizer, whatever the batch boundaries; and the kept rows spread over the
whole split instead of being its first rows. The index, not the text, is hashed: a text hash keeps all
copies of a repeated row or none, so a corpus with many repeats (web boilerplate, the benches' repeated
corpus) would leave the BPE a few distinct documents, far from the whole split's word counts. The keep
probability is the budget over the split's size (from flatten_report.json), so the sample fills the
budget near the split's end; a stop at the budget caps it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpipe.config.schema import TrainSample


@dataclass(frozen=True)
class SplitSize:
    """A split's size as the flatten stage counted it; None where it did not."""

    rows: int | None = None
    text_bytes: int | None = None


@dataclass
class SampleTally:
    """What a sample held, filled in as it is read: for the log line and tokenizer_sample.json."""

    rows: int = 0
    bytes: int = 0
    rows_read: int = 0  # rows looked at, kept or not
    seconds: float = 0.0  # set by whoever trains on the sample


def split_size(flatten_report: Path, split: str) -> SplitSize:
    """The split's rows and text bytes from flatten_report.json; a missing file or figure stays None
    (an older flatten artifact counted no bytes): the sample then keeps every row until its budget."""
    try:
        figures = json.loads(flatten_report.read_text()).get(split, {})
    except (OSError, ValueError, AttributeError):
        return SplitSize()
    if not isinstance(figures, dict):
        return SplitSize()
    rows, text_bytes = figures.get("rows"), figures.get("text_bytes")
    return SplitSize(rows if isinstance(rows, int) else None, text_bytes if isinstance(text_bytes, int) else None)


def keep_probability(size: SplitSize, budget: TrainSample) -> float:
    """The tighter of budget/size for bytes and rows; 1 where a budget or the size it needs is unknown."""
    fractions = [1.0]
    if budget.bytes is not None and size.text_bytes:
        fractions.append(budget.bytes / size.text_bytes)
    if budget.rows is not None and size.rows:
        fractions.append(budget.rows / size.rows)
    return min(fractions)


def row_hashes(first: int, count: int, seed: int) -> np.ndarray:
    """A uniform 64-bit number for each of the rows first..first+count-1 of a split: splitmix64 of the row's
    index, salted with the seed. A row gets the same number whatever batch it arrives in. Numpy, not a
    hashlib call per row: a 5 GB split has ~9M rows, and that loop alone took ~17 s of the minute here."""
    salt = int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "little")
    z = np.arange(first + 1, first + count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps mod 2**64
    z += np.uint64(salt)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sampled_texts(
    batches: Iterable[list[str]], size: SplitSize, budget: TrainSample, seed: int, tally: SampleTally
) -> Iterator[list[str]]:
    """The kept texts of `batches`, batch by batch (a split under budget comes back whole and unchanged);
    `tally` counts them. Stops once either budget is reached: the row that reaches it is the last one kept."""
    threshold = int(keep_probability(size, budget) * 2**64)  # keep a row whose hash is below
    byte_budget = budget.bytes if budget.bytes is not None else float("inf")
    row_budget = budget.rows if budget.rows is not None else float("inf")
    for batch in batches:
        first = tally.rows_read  # the batch's first row's index in the split
        tally.rows_read += len(batch)
        chosen: Iterable[int] = range(len(batch))
        if threshold < 2**64:
            chosen = np.flatnonzero(row_hashes(first, len(batch), seed) < np.uint64(threshold)).tolist()
        kept = []
        for index in chosen:
            kept.append(batch[index])
            tally.rows += 1
            tally.bytes += len(batch[index].encode())
            if tally.bytes >= byte_budget or tally.rows >= row_budget:
                tally.rows_read = first + index + 1
                yield kept
                return
        if kept:
            yield kept


def describe_sample(tally: SampleTally, size: SplitSize, split: str = "train") -> str:
    """'a 41.9 MB sample (12,345 of 1,000,000 rows) of the train split in 23.1 s'."""
    total = size.rows if size.rows is not None else tally.rows_read
    if tally.rows == total:
        return f"the whole {split} split ({tally.bytes / 1e6:.1f} MB, {total:,} rows) in {tally.seconds:.1f} s"
    return (
        f"a {tally.bytes / 1e6:.1f} MB sample ({tally.rows:,} of {total:,} rows) of the {split} split "
        f"in {tally.seconds:.1f} s"
    )
