"""group: our vectorized grouping against the guide's group_texts, side by side, in one run.

    .venv/bin/python bench/group_bench.py            # or: make bench
    .venv/bin/python bench/group_bench.py --rows 20000 --repeats 5

Both run through `Dataset.map(batched=True)` with the guide's 1000-row batches on the same
synthetic tokenized data (row lengths drawn like ELI5 answers), and must give identical blocks.
A second table times one batch as the batch grows, where the guide's `sum(list_of_lists, [])`
shows its quadratic cost. Figures are medians of `--repeats` runs; this reports, it never fails
on timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from datasets import Dataset, DatasetDict, disable_caching  # noqa: E402

from tasks.group import group_into_blocks, group_splits  # noqa: E402

BLOCK_SIZE = 128


def guide_group_texts(examples):
    """Verbatim from the Hugging Face language-modeling guide (block_size = 128)."""
    concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // BLOCK_SIZE) * BLOCK_SIZE
    result = {
        k: [t[i : i + BLOCK_SIZE] for i in range(0, total_length, BLOCK_SIZE)] for k, t in concatenated_examples.items()
    }
    result["labels"] = result["input_ids"].copy()
    return result


def synthetic_tokenized(rows: int, seed: int = 0) -> DatasetDict:
    """Rows of token ids with a long-tailed length distribution (median ~150 tokens, like ELI5 answers)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=5.0, sigma=0.9, size=rows).astype(int), 1, 4000)
    ids = [rng.integers(0, 50_000, size=n).tolist() for n in lengths]
    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * n for n in lengths]})
    return DatasetDict(train=data)


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def dataset_table(rows: int, repeats: int) -> None:
    tokenized = synthetic_tokenized(rows)
    tokens = sum(len(x) for x in tokenized["train"]["input_ids"])
    guide_s, guide = median_seconds(lambda: tokenized.map(guide_group_texts, batched=True), repeats)
    ours_s, (ours, _) = median_seconds(
        lambda: group_splits(tokenized, BLOCK_SIZE, "drop", 0, with_labels=True), repeats
    )
    identical = all(guide["train"][c] == ours["train"][c] for c in ("input_ids", "attention_mask", "labels"))
    print(f"\nDataset.map over {rows:,} rows / {tokens:,} tokens, block_size {BLOCK_SIZE}, median of {repeats}")
    print(f"{'implementation':<26}{'seconds':>10}{'tokens/s':>16}")
    print(f"{'guide group_texts':<26}{guide_s:>10.3f}{tokens / guide_s:>16,.0f}")
    print(f"{'ours group_splits':<26}{ours_s:>10.3f}{tokens / ours_s:>16,.0f}")
    print(f"speed-up (guide / ours): {guide_s / ours_s:.1f}x   identical blocks: {identical}")


def ours_one_batch(batch: list[list[int]], tokens: int):
    flat = np.fromiter((t for row in batch for t in row), dtype=np.int64, count=tokens)
    return group_into_blocks(flat, np.ones_like(flat), BLOCK_SIZE, "drop", 0)


def batch_scaling_table(repeats: int) -> None:
    print(f"\nOne batch, growing: guide's sum(list, []) vs one NumPy concatenation, median of {repeats}")
    print(f"{'rows':>8}{'tokens':>12}{'guide s':>12}{'ours s':>12}{'ratio':>10}")
    rng = np.random.default_rng(1)
    for rows in (250, 1000, 4000):
        batch = [rng.integers(0, 50_000, size=150).tolist() for _ in range(rows)]
        tokens = rows * 150
        guide_s, _ = median_seconds(partial(guide_group_texts, {"input_ids": batch}), repeats)
        ours_s, _ = median_seconds(partial(ours_one_batch, batch, tokens), repeats)
        print(f"{rows:>8,}{tokens:>12,}{guide_s:>12.4f}{ours_s:>12.4f}{guide_s / ours_s:>9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    disable_caching()  # time the work, not datasets' cache lookups
    dataset_table(args.rows, args.repeats)
    batch_scaling_table(args.repeats)


if __name__ == "__main__":
    main()
