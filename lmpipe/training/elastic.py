"""N training ranks on one node through torch's elastic launcher (torchrun), never a launcher of our own.

`python -m lmpipe.training.elastic N job.json` is what the train task starts when train.processes
resolves to more than one: torch.distributed.run with `--standalone` (a rendezvous on this node only,
on a free port), no restarts (a failed rank fails the task, which resumes from its last checkpoint
when run again), and each rank running `python -m lmpipe.training.worker job.json`. The only thing
added to torchrun is that it dies with the task: the kernel sends it SIGTERM when the task's
process dies, even by SIGKILL, and torchrun then stops its ranks (each of which also dies with
torchrun, lmpipe.training.worker).

What torchrun prints when a rank fails is read back by `failed_rank`, so the task's one line names
the rank and how it ended.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import NamedTuple

from lmpipe.compute.child_processes import PARENT_PID_ENV, die_with_parent

MONITOR_INTERVAL_S = 0.5  # how often torchrun checks its ranks: a dead one fails the run within a second


def torchrun_arguments(processes: int, module: str, job_file: str) -> list[str]:
    return [
        "--standalone",
        f"--nproc-per-node={processes}",
        "--max-restarts=0",
        f"--monitor-interval={MONITOR_INTERVAL_S}",
        "-m",
        module,
        job_file,
    ]


def main(processes: int, job_file: str) -> None:
    die_with_parent(int(os.environ.get(PARENT_PID_ENV, os.getppid())), signal.SIGTERM)
    from torch.distributed.run import main as torchrun

    from lmpipe.training import worker

    os.environ[PARENT_PID_ENV] = str(os.getpid())  # the ranks' parent: each dies with this process
    # torchrun's own warning that it sets OMP_NUM_THREADS=1 is moot: each rank sets its threads itself.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torchrun(torchrun_arguments(processes, worker.__name__, job_file))


class FailedRank(NamedTuple):
    rank: int
    exitcode: int
    pid: int


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)\s*\(pid:\s*(\d+)\)", re.DOTALL)
# Lines torchrun itself writes (its log lines and its failure report): never a rank's last words.
_TORCHRUN_LINE = re.compile(r"^([EWI]\d{4} |\[[EWI] |.*torch\.distributed\.elastic|.*ChildFailedError)")


def failed_rank(output: list[str]) -> FailedRank | None:
    """The first rank torchrun saw fail, from its report in `output`; None when there is no report."""
    found = _ROOT_CAUSE.search("\n".join(output))
    return FailedRank(*(int(group) for group in found.groups())) if found else None


def ranks_output(output: list[str]) -> list[str]:
    """`output` up to where torchrun starts reporting the failure: what the ranks printed."""
    for index, line in enumerate(output):
        if _TORCHRUN_LINE.match(line):
            return output[:index]
    return output


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
