"""tokenize: our stage against a bare batched call of the same fast tokenizer, side by side, in one run.

    .venv/bin/python bench/tokenize_bench.py           # or: make bench  (30 MB of text)
    .venv/bin/python bench/tokenize_bench.py --smoke   # seconds: proves the script runs

The texts are the offline default's (builtin corpus answers), repeated to --megabytes; the tokenizer
is the byte-level BPE the default run trains. Three ways over the same texts, same cores:
- bare: one `tokenizer(texts)` call, the fast tokenizer's own Rust threads, results left as lists;
- ours: what the tokenize stage does once it has its tokenizer (`tokenize_saved`): the flat
  artifact streamed from disk in 1000-row batches through worker processes, token ids written as
  Arrow into the artifact directory;
- batched=False: `Dataset.map` with one text per call, the same worker processes.
Target: ours >= 0.8x the bare call's tokens/s (the dataset and cache layers cost at most 20%).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchlib import builtin_texts, median_seconds, parser, record, table, texts_of_size, trained_tokenizer, verdict
from datasets import Dataset, DatasetDict, disable_caching

from lmpipe.compute.cpu import available_cores
from lmpipe.data.tokenize import tokenize_saved

TARGET_RATIO = 0.8


def bare_call(tokenizer: Any, texts: list[str]) -> int:
    encoded = tokenizer(texts, verbose=False)
    return sum(len(ids) for ids in encoded["input_ids"])


def ours(tokenizer: Any, num_proc: int, scratch: Path) -> int:
    out = scratch / "tokenized"
    shutil.rmtree(out, ignore_errors=True)
    return sum(tokenize_saved(scratch / "flat", tokenizer, num_proc, out).values())


def one_at_a_time(tokenizer: Any, splits: DatasetDict, num_proc: int) -> int:
    mapped = splits.map(
        lambda row: tokenizer(row["text"], verbose=False), batched=False, num_proc=num_proc, remove_columns=["text"]
    )
    return sum(len(ids) for ids in mapped["train"]["input_ids"])


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--megabytes", type=float, default=30.0, help="UTF-8 size of the texts to tokenize")
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    if args.smoke:
        args.megabytes, args.repeats = 0.3, 1
    disable_caching()
    distinct = builtin_texts()
    tokenizer = trained_tokenizer(distinct)
    texts = texts_of_size(args.megabytes, distinct)
    splits = DatasetDict(train=Dataset.from_dict({"text": texts}))
    num_proc = min(available_cores(), 4)  # the stage's default (data.num_proc: null)

    with tempfile.TemporaryDirectory(prefix="tokenize-bench-") as scratch:
        splits.save_to_disk(f"{scratch}/flat")
        bare_s, tokens = median_seconds(lambda: bare_call(tokenizer, texts), args.repeats)
        ours_s, ours_tokens = median_seconds(lambda: ours(tokenizer, num_proc, Path(scratch)), args.repeats)
        single_s, single_tokens = median_seconds(lambda: one_at_a_time(tokenizer, splits, num_proc), args.repeats)
    assert ours_tokens == tokens == single_tokens, (tokens, ours_tokens, single_tokens)

    ratio, over_single = bare_s / ours_s, single_s / ours_s
    print(
        table(
            f"\ntokenize: {len(texts):,} texts, {args.megabytes:g} MB, {tokens:,} tokens, vocab {len(tokenizer)}, "
            f"{num_proc} cores, median of {args.repeats}",
            ["implementation", "seconds", "tokens/s", "ours vs it"],
            [
                ["bare tokenizer(texts)", bare_s, tokens / bare_s, f"{ratio:.2f}x"],
                ["ours (stream + Arrow artifact)", ours_s, tokens / ours_s, "1.00x"],
                ["Dataset.map(batched=False)", single_s, tokens / single_s, f"{over_single:.2f}x"],
            ],
        )
    )
    print(f"target: ours >= {TARGET_RATIO}x the bare call's throughput -> {verdict(ratio >= TARGET_RATIO)}")
    record(
        "tokenize",
        args,
        {
            "texts": len(texts),
            "megabytes": args.megabytes,
            "tokens": tokens,
            "num_proc": num_proc,
            "repeats": args.repeats,
            "reference_s": round(bare_s, 4),
            "ours_s": round(ours_s, 4),
            "batched_false_s": round(single_s, 4),
            "ratio_vs_bare": round(ratio, 3),
            "ratio_vs_batched_false": round(over_single, 2),
            "target_ratio": TARGET_RATIO,
            "target_holds": ratio >= TARGET_RATIO,
        },
    )


if __name__ == "__main__":
    main()
