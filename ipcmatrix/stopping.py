"""Ending a run early, cleanly: the run's own deadline, waking the main thread from a
signal-less place, and how an interrupt is shown.

What every ending shares is ``runner.cancel_all`` (each running probe's tree is killed
and reported ``interrupted`` with what it measured) followed by KeyboardInterrupt in the
main thread, so that pytest's ordinary interrupted ending writes the report.
"""
from __future__ import annotations

import _thread
import contextlib
import signal
import threading

import psutil

from ipcmatrix import catalogue, runner

GRACE_S = 5.0   # after the run deadline, how long the ordinary ending may take


def run_deadline(conformance, families):
    """The run's own deadline: the families measured side by side, then each that runs
    alone, each within the probe deadline, plus room for the tests themselves."""
    alone = sum(1 for family in families if catalogue.runs_alone(family))
    return conformance.probe_deadline * (2 + alone) + 30 * conformance.timeout_multiplier


class Watchdog:
    """Past ``seconds``, end the run as a signal would; if it has not ended GRACE_S later
    (the main thread stuck, e.g. xdist waiting for a worker that died), ``give_up()``."""

    def __init__(self, seconds, give_up):
        self.seconds = seconds
        self._give_up = give_up
        self._timer = self._start(seconds, self._expire)

    @staticmethod
    def _start(seconds, action):
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        return timer

    def _expire(self):
        runner.cancel_all(f"the run passed its {self.seconds:g} s run deadline")
        interrupt_main_thread()
        self._timer = self._start(GRACE_S, self._give_up)

    def cancel(self):
        self._timer.cancel()


def interrupt_main_thread():
    """KeyboardInterrupt in the main thread, even one asleep in a system call: a real
    signal to that thread where our handler is installed, else the interpreter's flag."""
    if signal.getsignal(signal.SIGTERM) is runner.end_run:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    else:
        _thread.interrupt_main()


def kill_children():
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def point_at_the_signal(excinfo):
    """Make an interrupt's traceback one entry, ``<SIGTERM>:1``, which pytest renders at
    once (it has no source to look for)."""
    name = str(excinfo.value) or "SIGINT"
    try:
        exec(compile(f"raise KeyboardInterrupt({name!r})", f"<{name}>", "exec"), {})
    except KeyboardInterrupt as raised:
        excinfo.traceback = type(excinfo.traceback)(raised.__traceback__.tb_next)
