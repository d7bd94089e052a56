"""Timeouts the platform promises: SO_RCVTIMEO, SO_SNDTIMEO and poll's timeout.

Every probe in the kit bounds its waits with these, so the kit checks that they keep their
word: a call given a timeout returns no sooner than asked, and no later than the platform's
tolerance (``timing_tolerance_ms`` in the platform's table, which the session passes in as
IPCMATRIX_TIMING_TOLERANCE_MS).

"No sooner than asked" is judged to the clock the timeout is kept in.  Linux keeps
SO_RCVTIMEO and SO_SNDTIMEO in jiffies: sock_set_timeout (net/core/sock.c) rounds the
microseconds up to whole jiffies, and the timer wheel adds a jiffy so a timer armed
mid-tick does not fire early (kernel/time/timer.c calc_index) -- early in jiffies, that
is.  Against CLOCK_MONOTONIC a wait can still end up to one tick early when jiffies catch
up (seen on this VM: 17.1 ms for 20 ms asked, once in about a hundred runs), so socket
timeouts are allowed one tick of earliness where the tick is known.  poll's timeout is an
hrtimer: no allowance.  Each detail records the tick and the allowance used.
"""
import os
import select
import socket
import statistics
import struct
import sys
import threading
import time

from . import harness
from .harness import Measured, experiment, observation

# How late a timeout fires is what this family measures: it runs alone in a session,
# not beside other probes competing for the CPU.
RUNS_ALONE = True

ASKED_MS = 20        # tens of ms: long against a tick, short enough to keep the family fast
TRIALS = 3           # lateness is judged on the least late: a preempted trial is load, not the OS
THREAD_STACK = 256 << 10   # bytes: each kind's thread makes a few system calls, no more
ENV_TOLERANCE = "IPCMATRIX_TIMING_TOLERANCE_MS"
DEFAULT_TOLERANCE_MS = 100.0   # a standalone run; the session passes the table's value
CLOCK_MONOTONIC_COARSE = 6     # <linux/time.h>; Python does not export it. Resolution: 1 jiffy
TIMEVAL = struct.Struct("@ll")  # struct timeval on LP64 Linux, macOS and FreeBSD


def tolerance_ms():
    return float(os.environ.get(ENV_TOLERANCE, DEFAULT_TOLERANCE_MS))


def tick_ms():
    """One jiffy on Linux (what SO_*TIMEO are rounded to); None where there is no such tick."""
    if not sys.platform.startswith("linux"):
        return None
    clock = harness.constant("CLOCK_MONOTONIC_COARSE", time) or CLOCK_MONOTONIC_COARSE
    try:
        return round(time.clock_getres(clock) * 1000, 3)
    except OSError:
        return None


def timeout_kept_ms(sock, option):
    """The timeout the kernel kept for ``option``, read back (Linux: whole jiffies)."""
    seconds, microseconds = TIMEVAL.unpack(sock.getsockopt(socket.SOL_SOCKET, option,
                                                           TIMEVAL.size))
    return seconds * 1000 + microseconds / 1000


def timed(call, what):
    """(milliseconds a call took to give up, the errno it gave up with).

    A call that comes back with something (data sent or received, an event) had nothing
    to wait for: there is no timeout to judge, so the key cannot be measured.
    """
    started = time.monotonic()
    try:
        result = call()
    except OSError as exc:
        return (time.monotonic() - started) * 1000, harness.errno_name(exc)
    elapsed = (time.monotonic() - started) * 1000
    if result:
        raise harness.Unmeasurable(f"{what} returned {result!r} instead of waiting")
    return elapsed, None


def honoured(elapsed, early_allowance_ms=0.0, **context):
    """No sooner than asked (to the clock it is kept in), and the least late trial within
    the platform's tolerance.

    Scheduling delay on a busy machine only ever adds lateness, so the least late of a
    few trials is the best reading of the OS's own timer; a kernel that is late by
    design is late every time and still fails.
    """
    tolerance = tolerance_ms()
    least_late = min(elapsed) - ASKED_MS
    return Measured(-early_allowance_ms <= least_late <= tolerance, asked_ms=ASKED_MS,
                    elapsed_ms=[round(e, 2) for e in elapsed],
                    least_late_ms=round(least_late, 2),
                    median_late_ms=round(statistics.median(elapsed) - ASKED_MS, 2),
                    tolerance_ms=tolerance, tick_ms=tick_ms(),
                    early_allowance_ms=early_allowance_ms, **context)


# --- SO_RCVTIMEO ---------------------------------------------------------------------------

def receive_timeouts():
    """recv on an idle blocking socket with SO_RCVTIMEO = 20 ms, a few times over."""
    a, b = socket.socketpair()
    with a, b:
        harness.set_recv_timeout(b, ASKED_MS / 1000)
        kept = timeout_kept_ms(b, socket.SO_RCVTIMEO)
        trials = [timed(lambda: b.recv(1) or "EOF", "recv") for _ in range(TRIALS)]
    return trials, kept


# --- every kind side by side ------------------------------------------------------------

@experiment
def every_kind():
    """Each kind's trials, one after another, in a thread of its own, the kinds side by side.

    A thread asleep in recv, send or poll holds no lock the others need, so the three
    timers run as they would alone and the family waits for TRIALS timeouts, not three
    kinds' worth of them.  Each kind's outcome is kept apart: one that fails fails only
    its own keys.
    """
    kinds = {"recv": receive_timeouts, "send": send_timeouts, "poll": poll_timeouts}
    outcomes = {}

    def trial(name, measure):
        try:
            outcomes[name] = (True, measure())
        except Exception as exc:  # noqa: BLE001 - re-raised to the keys that read it
            outcomes[name] = (False, exc)

    threads = []
    # Little stack for a thread that only waits, so that three fit a tight ulimit -v; where
    # even that has no room, that kind's trials run here, after the others have started.
    previous = threading.stack_size(THREAD_STACK)
    try:
        for item in kinds.items():
            thread = threading.Thread(target=trial, args=item, daemon=True)
            try:
                thread.start()
            except RuntimeError:
                trial(*item)
                continue
            threads.append(thread)
    finally:
        threading.stack_size(previous)
    for thread in threads:
        # Every wait inside is a kernel timeout of ASKED_MS; this only bounds a broken one.
        thread.join(harness.scaled(harness.CHILD_LIMIT))
    return outcomes


def outcome(kind):
    """What ``kind``'s trials gave (``every_kind``), or the error they raised."""
    finished = every_kind().get(kind)
    if finished is None:
        raise harness.Unmeasurable(f"the {kind} trials did not finish within "
                                   f"{harness.scaled(harness.CHILD_LIMIT):g} s")
    ok, result = finished
    if not ok:
        raise result
    return result


@observation("timeouts.so_rcvtimeo.errno")
def so_rcvtimeo_errno():
    """A recv whose SO_RCVTIMEO expires with nothing received fails with EAGAIN."""
    trials, _ = outcome("recv")
    errnos = sorted({str(ended) for _, ended in trials})
    return errnos[0] if len(errnos) == 1 else Measured(errnos[0], all_trials=errnos)


@observation("timeouts.so_rcvtimeo.honoured")
def so_rcvtimeo_honoured():
    """recv with SO_RCVTIMEO = 20 ms gives up no sooner than 20 ms and within the tolerance."""
    trials, kept = outcome("recv")
    return honoured([elapsed for elapsed, _ in trials], tick_ms() or 0.0, kernel_kept_ms=kept)


# --- SO_SNDTIMEO ---------------------------------------------------------------------------

def fill(sock, limit=1 << 16):
    """Send without blocking until the connection holds no more, big writes then 1-byte ones."""
    sock.setblocking(False)
    try:
        for size in (65536, 1):
            for _ in range(limit):
                try:
                    sock.send(bytes(size))
                except BlockingIOError:
                    break
            else:
                raise harness.Unmeasurable(f"{limit} sends of {size} bytes never filled it")
    finally:
        sock.setblocking(True)


def send_timeouts():
    """send into a full stream with SO_SNDTIMEO = 20 ms, a few times over."""
    a, b = socket.socketpair()
    with a, b:
        fill(a)
        harness.set_send_timeout(a, ASKED_MS / 1000)
        kept = timeout_kept_ms(a, socket.SO_SNDTIMEO)
        trials = [timed(lambda: a.send(b"x"), "send into a full stream") for _ in range(TRIALS)]
    return trials, kept


@observation("timeouts.so_sndtimeo.honoured")
def so_sndtimeo_honoured():
    """A send into a full stream with SO_SNDTIMEO = 20 ms gives up no sooner than 20 ms."""
    trials, kept = outcome("send")
    errnos = sorted({str(ended) for _, ended in trials})
    return honoured([elapsed for elapsed, _ in trials], tick_ms() or 0.0, kernel_kept_ms=kept,
                    errno=errnos if len(errnos) > 1 else errnos[0])


# --- poll ---------------------------------------------------------------------------------------

def idle_wait(sock):
    """A call that waits ASKED_MS for ``sock`` to become readable: poll, or select without it."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return "poll", lambda: poller.poll(ASKED_MS)
    return "select", lambda: select.select([sock], [], [], ASKED_MS / 1000)[0]


def poll_timeouts():
    """poll (or select) on an idle socket with a 20 ms timeout, a few times over."""
    a, b = socket.socketpair()
    with a, b:
        call, wait = idle_wait(b)
        trials = [timed(wait, call) for _ in range(TRIALS)]
    return trials, call


@observation("timeouts.poll.honoured")
def poll_honoured():
    """poll on an idle socket with a 20 ms timeout returns no sooner than 20 ms."""
    trials, call = outcome("poll")
    return honoured([elapsed for elapsed, _ in trials], call=call)


if __name__ == "__main__":
    harness.main()
