"""The training process: `python -m lmpipe.training.worker job.json`, started by the launcher.

It trains with lmpipe.training.loop and reports through lmpipe.training.events. Bad input found
here (a block_size too long for a pretrained model, an unreachable Hub) is sent back as an event,
so the launcher raises the same one-line error.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from lmpipe.compute.child_processes import PARENT_PID_ENV, die_with_parent
from lmpipe.errors import is_input_error
from lmpipe.training.events import emit
from lmpipe.training.job import read_job_file
from lmpipe.training.loop import train_model


def exit_with_parent(poll_s: float = 2.0) -> None:
    """End this training process if its parent (the task) dies, so no trainer is left holding a GPU.

    The parent kills us on errors and cancellation; this covers the parent being killed outright: at
    once on Linux (the kernel sends SIGKILL), and within `poll_s` elsewhere.
    """
    parent = int(os.environ.get(PARENT_PID_ENV, os.getppid()))  # the task, or torchrun for a rank
    die_with_parent(parent, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(job_file: Path) -> None:
    exit_with_parent()  # first: the parent may be killed while this process still imports
    job, out_dir = read_job_file(job_file)
    try:
        train_model(job, out_dir)
    except Exception as error:
        if not is_input_error(error):
            raise
        emit("input_error", message=str(error))
        sys.exit(2)
    leave_the_process_group()


def leave_the_process_group() -> None:
    """Under torchrun: wait until every rank is done (rank 0 writes the files last), then close the group,
    so no rank exits while another still talks to it (gloo aborts the survivor otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
