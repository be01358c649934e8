"""Every benchmark script still runs: each once with --smoke (seconds, tiny inputs), in its own process.

Benchmarks are not tests: nothing here looks at a timing. It checks that the script finishes,
prints its side-by-side table with the target line, and appends one JSON result that carries the
machine's description.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ["group", "tokenize", "train", "scale", "rerun", "register"]


def test_every_bench_script_is_covered_here():
    assert sorted(p.stem.removesuffix("_bench") for p in BENCH.glob("*_bench.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("bench", SCRIPTS)
def test_bench_script_runs_and_records_its_result(bench, tmp_path):
    finished = subprocess.run(
        [sys.executable, str(BENCH / f"{bench}_bench.py"), "--smoke", "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-3000:]
    assert "target:" in finished.stdout and ("target holds" in finished.stdout or "TARGET MISSED" in finished.stdout)
    (line,) = (tmp_path / f"{bench}.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["bench"] == bench and entry["smoke"] is True
    assert entry["machine"]["cores"] >= 1 and entry["machine"]["packages"]["torch"]
    assert isinstance(entry["result"]["target_holds"], bool)
