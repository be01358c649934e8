"""memory: peak RSS while our tokenize and group stages process a 1 GB text corpus.

    .venv/bin/python bench/memory_bench.py             # or: make bench  (1 GB of text, a few minutes)
    .venv/bin/python bench/memory_bench.py --smoke     # seconds: proves the script runs

The corpus is the builtin corpus's answers repeated to --megabytes, written as the flatten stage's
artifact (an Arrow dataset with a `text` column, 95% train / 5% test) without ever holding it in
memory. A child process then runs the two stage functions the pipeline runs, tokenize_dataset
(with a pretrained local tokenizer, so no BPE training is timed) and group_dataset, while this
process samples the RSS of the child and every process it forks (datasets' map workers), summed,
every 50 ms. There is no reference: the target is a ceiling, peak memory <= 2 GB.
Memory is the tree's summed PSS: each process's resident pages, a page shared by N processes
(forked workers share their parent's imports) counted 1/N in each, so the sum counts it once. Summed
RSS, which counts shared pages once per process, and the anonymous part (heap: what Python lists
would fill) are reported beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import PROJECT_ROOT, builtin_texts, parser, record, table, texts_until, trained_tokenizer, verdict

TARGET_PEAK_GIB = 2.0
PAGE_KIB = 4


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous PSS) of one process in KiB; zeros once it is gone. PSS shares each page among
    the processes mapping it, so the tree's sum counts a page forked workers share once, not per worker."""
    figures = {"Rss:": 0, "Pss:": 0, "Pss_Anon:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name = line.split(maxsplit=1)[0] if line else ""
            if name in figures:
                figures[name] = int(line.split()[1])
    except (OSError, IndexError):
        pass
    return figures["Rss:"], figures["Pss:"], figures["Pss_Anon:"]


class PeakSampler(threading.Thread):
    """Samples the memory of a process tree until stopped; keeps the peaks of the sums."""

    def __init__(self, root: int, every_s: float = 0.05):
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.peak_pss_kib = self.peak_anon_kib = self.peak_rss_kib = self.peak_processes = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            tree = process_tree(self.root)
            figures = [memory_kib(pid) for pid in tree]
            self.peak_rss_kib = max(self.peak_rss_kib, sum(rss for rss, _, _ in figures))
            self.peak_pss_kib = max(self.peak_pss_kib, sum(pss for _, pss, _ in figures))
            self.peak_anon_kib = max(self.peak_anon_kib, sum(anon for _, _, anon in figures))
            self.peak_processes = max(self.peak_processes, len(tree))
            time.sleep(self.every_s)


def corpus_rows(megabytes: float, distinct: tuple[str, ...]) -> Iterator[dict[str, str]]:
    for text in texts_until(megabytes, distinct):
        yield {"text": text}


def write_flat_artifact(megabytes: float, distinct: list[str], flat_dir: Path, cache_dir: Path) -> int:
    """The flatten stage's artifact for a corpus of `megabytes`, streamed to disk; returns its rows."""
    from datasets import Dataset, DatasetDict

    # A tuple, not a list: from_generator shards list arguments into one generator call per item.
    full = Dataset.from_generator(
        corpus_rows, gen_kwargs={"megabytes": megabytes, "distinct": tuple(distinct)}, cache_dir=str(cache_dir)
    )
    split = full.train_test_split(test_size=0.05, seed=42, shuffle=False)
    DatasetDict(train=split["train"], test=split["test"]).save_to_disk(str(flat_dir / "dataset"))
    return len(full)


# What the child runs: the two stage functions, timed, with nothing else in the process.
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from lmpipe.config.loading import load_config
from lmpipe.data.tokenize import tokenize_dataset
from lmpipe.data.blocks import group_dataset
work = Path({work!r})
config = load_config(None, ["tokenizer.pretrained=" + str(work / "tokenizer"), "data.block_size=128"])
baseline = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])
started = time.perf_counter()
(work / "tokenize").mkdir()
tokenize_dataset(work / "flat", config, "clm", work / "tokenize")
tokenized = time.perf_counter()
(work / "group").mkdir()
group_dataset(work / "tokenize", 128, "drop", work / "group")
print(json.dumps({{"tokenize_s": tokenized - started, "group_s": time.perf_counter() - tokenized,
                  "baseline_kib": baseline}}))
"""


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--megabytes", type=float, default=1000.0, help="UTF-8 size of the corpus")
    args = cli.parse_args()
    if args.smoke:
        args.megabytes = 2.0
    distinct = builtin_texts()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as scratch:
        work = Path(scratch)
        trained_tokenizer(distinct).save_pretrained(str(work / "tokenizer"))
        started = time.perf_counter()
        rows = write_flat_artifact(args.megabytes, distinct, work / "flat", work / "generator-cache")
        print(f"corpus: {rows:,} rows, {args.megabytes:g} MB of text, written in {time.perf_counter() - started:.0f} s")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(root=str(PROJECT_ROOT), work=str(work))],
            stdout=subprocess.PIPE,
            text=True,
        )
        sampler = PeakSampler(child.pid)
        sampler.start()
        output, _ = child.communicate()
        sampler.stopped.set()
        sampler.join()
        if child.returncode != 0:
            sys.exit(f"memory bench: the stage process failed (exit {child.returncode})")
        times = json.loads(output.strip().splitlines()[-1])
        tokens = json.loads((work / "group" / "group_report.json").read_text())

    gib = 2**20
    peak_gib, anon_gib, rss_gib = sampler.peak_pss_kib / gib, sampler.peak_anon_kib / gib, sampler.peak_rss_kib / gib
    print(
        table(
            f"\nmemory: tokenize + group of {args.megabytes:g} MB of text ({rows:,} rows), "
            f"{sampler.peak_processes} processes at most",
            ["figure", "ours", "target"],
            [
                ["peak memory, all processes: summed PSS (GiB)", peak_gib, f"<= {TARGET_PEAK_GIB}"],
                ["  of which anonymous (GiB)", anon_gib, ""],
                ["peak summed RSS, shared pages once per process (GiB)", rss_gib, ""],
                ["one process after its imports, before any data (GiB)", times["baseline_kib"] / gib, ""],
                ["tokenize (s)", times["tokenize_s"], ""],
                ["group (s)", times["group_s"], ""],
                ["train blocks", tokens["train"]["blocks"], ""],
            ],
        )
    )
    print(f"target: peak memory <= {TARGET_PEAK_GIB} GiB -> {verdict(peak_gib <= TARGET_PEAK_GIB)}")
    result: dict[str, Any] = {
        "megabytes": args.megabytes,
        "rows": rows,
        "peak_pss_gib": round(peak_gib, 3),
        "peak_anon_pss_gib": round(anon_gib, 3),
        "peak_rss_sum_gib": round(rss_gib, 3),
        "baseline_rss_gib": round(times["baseline_kib"] / gib, 3),
        "max_processes": sampler.peak_processes,
        "tokenize_s": round(times["tokenize_s"], 1),
        "group_s": round(times["group_s"], 1),
        "train_blocks": tokens["train"]["blocks"],
        "target_peak_gib": TARGET_PEAK_GIB,
        "target_holds": peak_gib <= TARGET_PEAK_GIB,
    }
    record("memory", args, result)


if __name__ == "__main__":
    main()
