"""Child processes that never outlive their parent, and what to say when one is killed.

The pipeline starts two kinds of long-lived children: the temporary Prefect server of a local run,
and the training process of a train task. Both must end when their parent ends, even when the
parent is SIGKILLed and runs no cleanup: Linux does that for us (PR_SET_PDEATHSIG). And when a
child dies by a signal, the user deserves the signal's name, and "out of memory" only where the
kernel says it killed something for that.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PARENT_PID_ENV = "LMPIPE_PARENT_PID"  # set by the parent for a child that arms itself (die_with_parent)


def die_with_parent(parent_pid: int | None = None, sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel to send this process `sig` when its parent dies (Linux; elsewhere a no-op).

    Called by the child itself, first thing: safe in a parent with threads, unlike a preexec_fn. If the
    parent already died before this ran (the process was re-parented), exit at once instead.
    """
    if _LIBC is None:
        return
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig))
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(128 + int(sig))


def die_with_parent_from_env(sig: signal.Signals = signal.SIGTERM) -> None:
    """die_with_parent for a child started with PARENT_PID_ENV in its environment."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is not None:
        die_with_parent(int(parent), sig)


def child_environment() -> dict[str, str]:
    """What a child that arms die_with_parent_from_env needs in its environment."""
    return {PARENT_PID_ENV: str(os.getpid())}


# ---------------------------------------------------------------------------- why it ended


def signal_of(returncode: int) -> signal.Signals | None:
    """The signal a child died of: Popen's negative return code, or a shell's 128 + N."""
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else None
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup (cgroup v2 memory.events);
    None where that cannot be read."""
    try:
        cgroup = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split(":", 2)[2]
        events = Path("/sys/fs/cgroup", cgroup.lstrip("/"), "memory.events").read_text()
    except (OSError, IndexError):
        return None
    found = re.search(r"^oom_kill (\d+)$", events, re.MULTILINE)
    return int(found.group(1)) if found else None


def oom_killed_in_kernel_log(pid: int) -> bool:
    """Does the kernel log say it killed `pid` for memory? False where dmesg cannot be read (often)."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(rf"(Out of memory|oom-kill).*\b(pid[= ]|process ){pid}\b", log) is not None


def ending_of(returncode: int, pid: int, oom_kills_before: int | None) -> str:
    """How a child ended, in words: 'killed by SIGKILL (out of memory: ...)', 'exit code 3', ..."""
    sig = signal_of(returncode)
    if sig is None:
        return f"exit code {returncode}"
    words = f"killed by {sig.name}"
    if sig == signal.SIGKILL:
        after = oom_kills()
        if oom_kills_before is not None and after is not None and after > oom_kills_before:
            return f"{words} (out of memory: the kernel's OOM killer ran in this cgroup, memory.events)"
        if oom_killed_in_kernel_log(pid):
            return f"{words} (out of memory: the kernel log names pid {pid})"
    return words


# A progress bar's line (tqdm and friends): a percentage and a bar, or only carriage-return redraws.
_PROGRESS_BAR = re.compile(r"\d+%\|.*\||\d+/\d+ \[\d+:\d+")


def last_meaningful_line(lines: list[str]) -> str | None:
    """The last output line that says something: not blank, not a progress bar's redraw."""
    for line in reversed(lines):
        text = line.rsplit("\r", 1)[-1].strip()  # a bar redrawn in place: only its last state counts
        if text and not _PROGRESS_BAR.search(text):
            return text
    return None
