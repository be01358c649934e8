"""What every benchmark script shares: the machine's description, timing, the side-by-side table,
and appending the result to bench/results/<bench>.jsonl.

A benchmark reports; it never fails on a figure. The targets are printed next to the figures so a
reader sees at once whether they hold on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
sys.path.insert(0, str(PROJECT_ROOT))

# Offline and quiet, like every local run of the pipeline.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "true",
}.items():
    os.environ.setdefault(_name, _value)

_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "pyarrow", "prefect", "mlflow")


def cpu_model() -> str:
    from lmpipe.compute.cpu import cpuinfo_value

    return cpuinfo_value("model name") or platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What a figure is only true for: CPU, cores this process may use, memory, GPU, versions."""
    from lmpipe.compute.cpu import available_cores, cpu_has_native_bf16

    description: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),  # decides what precision auto trains in on a CPU
        "cores": available_cores(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in _PACKAGES},
        "gpu": None,
    }
    import torch

    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls, and the last call's result."""
    runs = [timed(fn) for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: the first column left-aligned, the rest right-aligned."""
    cells = [[_cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    for row in cells:
        lines.append(
            "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)).rstrip()
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(holds: bool) -> str:
    return "target holds" if holds else "TARGET MISSED"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every bench script takes."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument("--smoke", action="store_true", help="a seconds-long run that proves the script works")
    parsed.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <bench>.jsonl is appended")
    return parsed


def record(bench: str, args: argparse.Namespace, result: dict[str, Any]) -> Path:
    """Append one JSON line: the bench, when, how it was run, the machine, and the figures."""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{bench}.jsonl"
    entry = {
        "bench": bench,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "smoke": bool(args.smoke),
        "machine": machine(),
        "result": result,
    }
    with path.open("a") as sink:
        sink.write(json.dumps(entry) + "\n")
    print(f"\nappended to {path}")
    return path


def builtin_texts(documents: int = 100_000) -> list[str]:
    """The offline default's texts: each builtin document's answers joined, as flatten joins them."""
    from lmpipe.data.builtin_corpus import builtin_documents
    from lmpipe.data.flatten import join_text

    return [join_text(doc["answers"]["text"], "answers.text") for doc in builtin_documents(documents)]


def texts_until(megabytes: float, distinct: Sequence[str]) -> Iterator[str]:
    """`distinct` repeated (in order) until the UTF-8 size reaches `megabytes`, one text at a time."""
    size, wanted = 0, megabytes * 1e6
    while size < wanted:
        for text in distinct:
            yield text
            size += len(text.encode())
            if size >= wanted:
                return


def texts_of_size(megabytes: float, distinct: Sequence[str]) -> list[str]:
    return list(texts_until(megabytes, distinct))


def trained_tokenizer(texts: list[str], vocab_size: int = 4096):
    """The tokenizer the default run trains (byte-level BPE), trained on `texts`."""
    from lmpipe.data.tokenizers import train_bpe_tokenizer

    return train_bpe_tokenizer([texts], vocab_size, 2)


# ---------------------------------------------------------------------------- memory of a process tree
#
# Memory is the tree's summed PSS: each process's resident pages, a page shared by N processes
# (forked workers share their parent's imports) counted 1/N in each, so the sum counts it once.

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
