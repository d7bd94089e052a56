"""How fast this machine starts a probe interpreter, timed once per command, in the
background from its first moment; the session scales its bounds by it on a slow machine.

Kept apart from the session (which imports most of the kit) so that a run starts the
timing before it imports anything else.
"""
from __future__ import annotations

import math
import subprocess
import sys
import threading
import time


# A probe interpreter starts in 0.02-0.1 s on an ordinary machine, loaded or not; the
# table's deadlines and windows assume that.  Past SLOW_START the kit scales its bounds
# by how many times slower the start was, and says so.
SLOW_START_S = 0.5
START_PER_MULTIPLIER_S = 0.5


class StartTiming(threading.Thread):
    """``interpreter_start_s`` timed in the background, from the moment the command starts,
    so that the run's probes need not wait for it once the tables are read."""

    def __init__(self):
        super().__init__(name="ipcmatrix-start-timing", daemon=True)
        self.seconds = None
        self.start()

    def run(self):
        self.seconds = interpreter_start_s()


_timing = []   # the StartTiming ``time_interpreter_start`` began, if any


def time_interpreter_start():
    """Begin timing a probe interpreter's start now; the session's ``machine`` reads it."""
    from ipcmatrix import resources
    # Under a tight ulimit -v a thread may start and then abort the process as it exits
    # (glibc cannot map libgcc_s for pthread_exit): time it when needed, in this thread.
    if not _timing and not resources.address_space_limited():
        try:
            _timing.append(StartTiming())
        except RuntimeError:   # no room for a thread (ulimit -v): timed when first needed
            pass


def timed_interpreter_start():
    """The start time begun by ``time_interpreter_start``, else measured now."""
    if _timing:
        _timing[0].join()
        if _timing[0].seconds is not None:
            return _timing[0].seconds
    return interpreter_start_s()


def interpreter_start_s(python=sys.executable, limit=60.0):
    """How long this machine takes to start a probe interpreter (``python -I -S -c pass``,
    as the launcher and a probe started on its own are: no ``site``)."""
    started = time.monotonic()
    try:
        subprocess.run([python, "-I", "-S", "-c", "pass"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=limit,
                       process_group=0, check=False)
    except subprocess.TimeoutExpired:
        return limit
    return round(time.monotonic() - started, 3)


def multiplier_for(start_s):
    """The --timeout-multiplier a machine starting Python in ``start_s`` needs (1 if not slow)."""
    if start_s <= SLOW_START_S:
        return 1.0
    return float(math.ceil(start_s / START_PER_MULTIPLIER_S))
