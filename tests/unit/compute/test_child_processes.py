"""Children that die with their parent, and the words for how a child ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lmpipe.compute.child_processes import ending_of, last_meaningful_line, signal_of


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_that_arms_itself_dies_when_its_parent_is_sigkilled(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = textwrap.dedent(
        f"""
        import os, signal, time
        from lmpipe.compute.child_processes import die_with_parent
        die_with_parent(os.getppid(), signal.SIGKILL)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(600)
        """
    )
    parent = textwrap.dedent(
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}])
        time.sleep(600)
        """
    )
    run = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        os.kill(run.pid, signal.SIGKILL)  # no cleanup runs in the parent
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child_pid):
            assert time.monotonic() < deadline, f"child {child_pid} outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie has already died
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(-9, signal.SIGKILL), (-15, signal.SIGTERM), (137, signal.SIGKILL), (143, signal.SIGTERM), (1, None), (0, None)],
)
def test_the_signal_is_read_from_popen_and_shell_exit_codes(returncode, expected):
    assert signal_of(returncode) == expected


def test_an_ending_names_the_signal_and_never_guesses_memory():
    assert ending_of(-signal.SIGTERM, os.getpid(), oom_kills_before=None) == "killed by SIGTERM"
    assert ending_of(3, os.getpid(), oom_kills_before=None) == "exit code 3"
    # No OOM kill counted in this cgroup since "before", and no kernel-log entry for a pid that never lived:
    assert ending_of(-signal.SIGKILL, 2**22 + 7, oom_kills_before=None) == "killed by SIGKILL"


def test_an_oom_kill_counted_by_the_cgroup_is_named(monkeypatch):
    import lmpipe.compute.child_processes as child_processes

    monkeypatch.setattr(child_processes, "oom_kills", lambda: 4)
    ending = ending_of(-signal.SIGKILL, 2**22 + 7, oom_kills_before=3)
    assert ending == "killed by SIGKILL (out of memory: the kernel's OOM killer ran in this cgroup, memory.events)"


def test_the_last_meaningful_line_skips_progress_bars_and_blanks():
    lines = [
        "Traceback (most recent call last):",
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        " 45%|####5     | 9/20 [00:04<00:05,  2.10it/s]",
        "Map: 100%|##########| 1000/1000 [00:00<00:00, 9000.00 examples/s]",
        "   ",
        " 1/20 [00:01<00:20]\r 2/20 [00:02<00:19]",
    ]
    assert last_meaningful_line(lines) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert last_meaningful_line(["", " 3%|3 | 1/30 [00:01<00:30,  1.00it/s]"]) is None
