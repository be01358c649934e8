"""group: our Arrow/NumPy grouping against the guide's group_texts, side by side, in one run.

    .venv/bin/python bench/group_bench.py              # or: make bench  (>= 50 MB of token ids)
    .venv/bin/python bench/group_bench.py --smoke      # seconds: proves the script runs

Both read the same synthetic tokenize artifact from disk (int32 ids and int8 masks, as our tokenize
stage writes them; row lengths drawn like ELI5 answers) in the guide's 1000-row batches and must
give identical blocks: the guide's function through `Dataset.map(batched=True)`, ours through the
group stage's `group_saved`, which also writes the finished artifact. A second table times one batch as the
batch grows, where the guide's `sum(list_of_lists, [])` shows its quadratic cost.
Target: ours >= 20x faster, with identical blocks.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from benchlib import median_seconds, parser, record, table, verdict
from datasets import Dataset, DatasetDict, disable_caching, load_from_disk

from lmpipe.data.blocks import group_into_blocks, group_saved
from lmpipe.data.columns import total_tokens

BLOCK_SIZE = 128
TARGET_SPEEDUP = 20.0


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


def synthetic_tokenized(id_megabytes: float, seed: int = 0) -> DatasetDict:
    """At least `id_megabytes` MB of int32 token ids, in rows with a long-tailed length distribution
    (median ~150 tokens, like ELI5 answers), built as Arrow arrays without Python lists."""
    rng = np.random.default_rng(seed)
    tokens_wanted = int(id_megabytes * 1e6 / 4)
    lengths = np.clip(rng.lognormal(mean=5.0, sigma=0.9, size=tokens_wanted // 100 + 10), 1, 4000).astype(np.int32)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), tokens_wanted)) + 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = pa.ListArray.from_arrays(offsets, rng.integers(0, 50_000, size=offsets[-1], dtype=np.int32))
    mask = pa.ListArray.from_arrays(offsets, np.ones(offsets[-1], dtype=np.int8))
    return DatasetDict(train=Dataset(pa.table({"input_ids": ids, "attention_mask": mask})))


def same_blocks(guide: Dataset, ours: Dataset) -> bool:
    def flat(data: Dataset, column: str) -> pa.Array:
        return data.data.column(column).combine_chunks().flatten()

    # The guide's blocks also carry a labels column (a copy of the ids) and an all-ones mask; ours leave labels
    # to the collator and store no mask where nothing is padded.
    return (
        len(guide) == len(ours)
        and pc.all(pc.equal(flat(guide, "input_ids"), flat(ours, "input_ids"))).as_py()
        and pc.all(pc.equal(flat(guide, "attention_mask"), 1)).as_py()
    )


def dataset_table(id_megabytes: float, repeats: int) -> dict[str, Any]:
    tokenized = synthetic_tokenized(id_megabytes)
    rows = len(tokenized["train"])
    tokens = total_tokens(tokenized["train"])
    megabytes = tokens * 4 / 1e6
    with tempfile.TemporaryDirectory(prefix="group-bench-") as scratch:
        source, blocks = Path(scratch) / "tokenized", Path(scratch) / "blocks"
        tokenized.save_to_disk(str(source))

        def guide_run() -> DatasetDict:
            return load_from_disk(str(source)).map(guide_group_texts, batched=True)

        def ours_run() -> DatasetDict:
            shutil.rmtree(blocks, ignore_errors=True)
            group_saved(source, blocks, BLOCK_SIZE, "drop", 0)
            return load_from_disk(str(blocks))

        guide_s, guide = median_seconds(guide_run, repeats)
        ours_s, ours = median_seconds(ours_run, repeats)
        identical = same_blocks(guide["train"], ours["train"])
    speedup = guide_s / ours_s
    print(
        table(
            f"\ngroup: Dataset.map(batched=True, batch 1000) over {rows:,} rows, {tokens:,} tokens "
            f"({megabytes:.1f} MB of int32 ids), block_size {BLOCK_SIZE}, median of {repeats}",
            ["implementation", "seconds", "tokens/s"],
            [["guide group_texts", guide_s, tokens / guide_s], ["ours group_saved", ours_s, tokens / ours_s]],
        )
    )
    print(f"ratio (guide / ours): {speedup:.1f}x faster   identical blocks: {identical}")
    holds = speedup >= TARGET_SPEEDUP and identical
    print(f"target: >= {TARGET_SPEEDUP:.0f}x faster with identical blocks -> {verdict(holds)}")
    return {
        "rows": rows,
        "tokens": tokens,
        "id_megabytes": round(megabytes, 1),
        "block_size": BLOCK_SIZE,
        "repeats": repeats,
        "reference_s": round(guide_s, 4),
        "ours_s": round(ours_s, 4),
        "speedup": round(speedup, 2),
        "identical_blocks": identical,
        "target_speedup": TARGET_SPEEDUP,
        "target_holds": holds,
    }


def ours_one_batch(batch: list[list[int]], tokens: int):
    flat = np.fromiter((t for row in batch for t in row), dtype=np.int64, count=tokens)
    return group_into_blocks(flat, BLOCK_SIZE, "drop", 0)


def batch_scaling_table(repeats: int, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows_out, figures = [], []
    for rows in sizes:
        batch = [rng.integers(0, 50_000, size=150).tolist() for _ in range(rows)]
        tokens = rows * 150
        guide_s, _ = median_seconds(partial(guide_group_texts, {"input_ids": batch}), repeats)
        ours_s, _ = median_seconds(partial(ours_one_batch, batch, tokens), repeats)
        rows_out.append([rows, tokens, guide_s, ours_s, f"{guide_s / ours_s:.1f}x"])
        figures.append({"rows": rows, "reference_s": round(guide_s, 5), "ours_s": round(ours_s, 5)})
    print(
        table(
            f"\nOne batch, growing: guide's sum(list, []) vs one NumPy concatenation, median of {repeats}",
            ["rows", "tokens", "guide s", "ours s", "ratio"],
            rows_out,
        )
    )
    return figures


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--id-megabytes", type=float, default=52.0, help="size of the int32 token ids to group")
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    if args.smoke:
        args.id_megabytes, args.repeats = 0.4, 1
    disable_caching()  # time the work, not datasets' cache lookups
    result = dataset_table(args.id_megabytes, args.repeats)
    result["batch_scaling"] = batch_scaling_table(args.repeats, (100, 400) if args.smoke else (250, 1000, 4000))
    record("group", args, result)


if __name__ == "__main__":
    main()
