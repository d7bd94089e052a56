"""Whether the kernel shows a process asleep: the one event a probe has that a child
has entered its blocking call, where the child itself cannot say so (it is blocked).

Linux and gVisor show it in /proc/<pid>/stat; elsewhere the answer is None, and callers
fall back to a bounded wait.
"""
from __future__ import annotations

import select
import time


def kernel_says_sleeping(pid):
    """True/False from /proc where the OS has it (Linux, gVisor); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("S", "D")
    except (OSError, IndexError):
        return None


def wait_until_asleep(pid, window):
    """Whether the kernel showed ``pid`` asleep within ``window`` s (False at once without /proc)."""
    end = time.monotonic() + window
    while time.monotonic() < end:
        state = kernel_says_sleeping(pid)
        if state is None:
            return False
        if state:
            return True
        select.select([], [], [], 0.001)  # /proc has no event to wait on
    return False
