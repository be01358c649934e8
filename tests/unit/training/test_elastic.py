"""Reading torchrun's report of a failed run: which rank failed first, how, and what the ranks printed."""

from __future__ import annotations

from pathlib import Path

from lmpipe.compute.child_processes import last_meaningful_line
from lmpipe.training.elastic import FailedRank, failed_rank, ranks_output, torchrun_arguments

# What `python -m torch.distributed.run --standalone --nproc-per-node=2 --max-restarts=0 die.py` printed
# (torch 2.13) when rank 1 SIGKILLed itself after a progress bar; paths shortened.
TORCHRUN_OUTPUT = (Path(__file__).parent / "torchrun_failure.txt").read_text()


def test_the_root_cause_names_the_rank_that_failed_first_not_the_ones_torchrun_stopped():
    assert failed_rank(TORCHRUN_OUTPUT.splitlines()) == FailedRank(rank=1, exitcode=-9, pid=14324)


def test_the_ranks_last_words_exclude_torchrun_and_progress_bars():
    output = ranks_output(TORCHRUN_OUTPUT.splitlines())
    assert output[-1].startswith("Epoch 1:  12%")
    assert last_meaningful_line(output) == "rank 1 up"


def test_no_report_no_rank():
    assert failed_rank(["RuntimeError: something else"]) is None


def test_torchrun_runs_the_worker_on_this_node_without_restarts():
    arguments = torchrun_arguments(2, "lmpipe.training.worker", "/tmp/job.json")
    assert arguments[:3] == ["--standalone", "--nproc-per-node=2", "--max-restarts=0"]
    assert arguments[-3:] == ["-m", "lmpipe.training.worker", "/tmp/job.json"]
