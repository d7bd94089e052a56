"""Synchronising processes with pthreads in shared memory: a process-shared mutex and
condition variable, and a robust mutex whose owner died.

    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(m, &attr);            /* m in MAP_SHARED memory */
    if (fork() == 0) { pthread_mutex_lock(m); counter++; pthread_mutex_unlock(m); }

Python binds none of this; probes._libc calls libc through ctypes, and a function the
C library lacks makes its observation "unsupported".  Every process that could wait for
ever (on a mutex, a condition) is a child killed at its deadline.  A family of its own,
beside sem: its counting keeps a CPU busy while sem's waiters sleep.
"""
import contextlib
import errno
import os
import select
import sys
import time

from . import _libc, harness
from .harness import Measured, errno_name, observation, outcome
from .sem import shared_page, supported

CHILD_TIMEOUT = harness.scaled(5.0)
PROCESSES = 4
# Increments per process.  Without the mutex, 4 x 500 lose 1,200-1,500 of 2,000 here, idle
# or beside two CPU-bound processes: far from none.  More rounds only cost time (and
# under load the guarded run, whose holder gives way inside the lock, is the slow one).
ROUNDS = 500


# --- a process-shared pthread mutex --------------------------------------------------------------

MUTEX_AT = 0
MUTEXATTR_AT = MUTEX_AT + _libc.MUTEX_STORAGE
COND_AT = MUTEXATTR_AT + _libc.MUTEXATTR_STORAGE
CONDATTR_AT = COND_AT + _libc.COND_STORAGE
FLAG_AT = CONDATTR_AT + _libc.CONDATTR_STORAGE
COUNTER_AT = FLAG_AT + 8


def read_counter(memory, at=COUNTER_AT):
    return int.from_bytes(memory[at:at + 8], sys.byteorder)


def write_counter(memory, value, at=COUNTER_AT):
    memory[at:at + 8] = value.to_bytes(8, sys.byteorder)


def give_way():
    """Let another process run between our read and our write: the race the mutex must win.

    Without it the read-add-write takes a few microseconds and, on a quiet machine, the
    unguarded control may lose nothing at all, so it could not show the check can fail.
    """
    yield_cpu = getattr(os, "sched_yield", None)
    if yield_cpu:
        yield_cpu()
    else:
        time.sleep(0)


def increment(memory, rounds, lock, unlock, start):
    """Read, give way, write back one more, ``rounds`` times: updates are lost unless the
    lock excludes the others."""
    start_read, start_write = start
    os.close(start_write)
    os.read(start_read, 1)  # EOF: every process is forked, all start at once
    for _ in range(rounds):
        lock()
        seen = read_counter(memory)
        give_way()
        write_counter(memory, seen + 1)
        unlock()
    return harness.OK


def count_together(memory, lock=lambda: None, unlock=lambda: None):
    """PROCESSES forked children increment one shared counter; the total they reach."""
    write_counter(memory, 0)
    with contextlib.ExitStack() as stack:
        start = os.pipe()
        stack.callback(os.close, start[0])
        try:
            children = [stack.enter_context(harness.Child(increment, memory, ROUNDS, lock,
                                                          unlock, start))
                        for _ in range(PROCESSES)]
        finally:
            os.close(start[1])  # the starting gun
        end = time.monotonic() + CHILD_TIMEOUT
        results = [child.wait(max(0.0, end - time.monotonic())) for child in children]
        if any(result is None for result in results):  # a timeout is never a behaviour
            raise harness.Unmeasurable(
                f"{sum(r is None for r in results)} of {PROCESSES} counting processes did not "
                f"finish within {CHILD_TIMEOUT:g} s (a slow machine? try --timeout-multiplier)")
        failed = [result.error for result in results if result.error]
        if failed:
            raise harness.Unmeasurable(f"a child failed: {failed[0]}")
    return read_counter(memory)


MUTEX_FUNCTIONS = ("pthread_mutexattr_init", "pthread_mutexattr_setpshared",
                   "pthread_mutexattr_destroy", "pthread_mutex_init", "pthread_mutex_lock",
                   "pthread_mutex_unlock", "pthread_mutex_destroy")


@contextlib.contextmanager
def shared_mutex(memory, robust=False):
    """A PTHREAD_PROCESS_SHARED mutex at MUTEX_AT of ``memory`` (robust if asked); its address.

    OSError from the attribute calls (the platform refuses the kind) reaches the caller.
    """
    mutex = _libc.address_in(memory, MUTEX_AT)
    attr = _libc.address_in(memory, MUTEXATTR_AT)
    _libc.pthread_mutexattr_init(attr)
    try:
        _libc.pthread_mutexattr_setpshared(attr, _libc.PTHREAD_PROCESS_SHARED)
        if robust:
            _libc.pthread_mutexattr_setrobust(attr, _libc.PTHREAD_MUTEX_ROBUST)
        _libc.pthread_mutex_init(mutex, attr)
        try:
            yield mutex
        finally:
            try:
                _libc.pthread_mutex_destroy(mutex)
            except OSError as exc:
                if exc.errno != errno.EBUSY:  # still held by an owner that died: leave it
                    raise
    finally:
        _libc.pthread_mutexattr_destroy(attr)


@observation("sync.pthread_mutex_process_shared")
def pthread_mutex_process_shared():
    """A PTHREAD_PROCESS_SHARED mutex in MAP_SHARED memory keeps forked processes' updates whole."""
    if not supported(*MUTEX_FUNCTIONS):
        return harness.UNSUPPORTED
    with shared_page() as memory, contextlib.ExitStack() as stack:
        try:
            mutex = stack.enter_context(shared_mutex(memory))
        except OSError as exc:
            return errno_name(exc)
        # The same race without the mutex must lose updates, or the check proves nothing.
        unlocked = count_together(memory)
        expected = PROCESSES * ROUNDS
        if unlocked == expected:
            raise harness.Unmeasurable(
                f"contention could not be shown: without the mutex {PROCESSES} processes "
                f"still counted all {expected} increments, so a broken mutex would pass too")
        locked = count_together(memory, lambda: _libc.pthread_mutex_lock(mutex),
                                lambda: _libc.pthread_mutex_unlock(mutex))
    return Measured(harness.OK if locked == expected else "lost-updates", expected=expected,
                    counted=locked, counted_without_mutex=unlocked)


# --- a process-shared condition variable ------------------------------------------------------

COND_FUNCTIONS = MUTEX_FUNCTIONS + (
    "pthread_condattr_init", "pthread_condattr_setpshared", "pthread_condattr_destroy",
    "pthread_cond_init", "pthread_cond_wait", "pthread_cond_signal", "pthread_cond_destroy")


def wait_for_flag(memory, mutex, cond, waiting_w):
    """The waiter: under the mutex, say it is about to wait, then cond_wait until the flag."""
    _libc.pthread_mutex_lock(mutex)
    waits = 0
    os.write(waiting_w, b"w")  # still holding the mutex: the signaller cannot lock before we wait
    while read_counter(memory, FLAG_AT) == 0:
        _libc.pthread_cond_wait(cond, mutex)
        waits += 1
    _libc.pthread_mutex_unlock(mutex)
    return {"waits": waits}


def raise_flag(memory, mutex, cond):
    """The signaller, another process: set the flag under the mutex and signal once."""
    _libc.pthread_mutex_lock(mutex)
    write_counter(memory, 1, FLAG_AT)
    _libc.pthread_cond_signal(cond)
    _libc.pthread_mutex_unlock(mutex)
    return harness.OK


@observation("sync.pthread_cond_process_shared")
def pthread_cond_process_shared():
    """A PTHREAD_PROCESS_SHARED condvar in MAP_SHARED memory: a process's signal wakes a waiter in another."""
    if not supported(*COND_FUNCTIONS):
        return harness.UNSUPPORTED
    with shared_page() as memory, contextlib.ExitStack() as stack:
        try:
            mutex = stack.enter_context(shared_mutex(memory))
            cond = stack.enter_context(shared_cond(memory))
        except OSError as exc:
            return errno_name(exc)
        return signal_across(memory, mutex, cond)


@contextlib.contextmanager
def shared_cond(memory):
    """A PTHREAD_PROCESS_SHARED condition variable at COND_AT of ``memory``; its address."""
    cond = _libc.address_in(memory, COND_AT)
    attr = _libc.address_in(memory, CONDATTR_AT)
    _libc.pthread_condattr_init(attr)
    try:
        _libc.pthread_condattr_setpshared(attr, _libc.PTHREAD_PROCESS_SHARED)
        _libc.pthread_cond_init(cond, attr)
        try:
            yield cond
        finally:
            _libc.pthread_cond_destroy(cond)
    finally:
        _libc.pthread_condattr_destroy(attr)


def signal_across(memory, mutex, cond):
    """Waiter and signaller are both children, so no wait can hang this process."""
    write_counter(memory, 0, FLAG_AT)
    waiting_r, waiting_w = os.pipe()
    try:
        with harness.Child(wait_for_flag, memory, mutex, cond, waiting_w) as waiter:
            os.close(waiting_w)
            waiting_w = None
            if not select.select([waiting_r], [], [], CHILD_TIMEOUT)[0]:
                raise harness.Unmeasurable(f"the waiter did not reach its wait within "
                                           f"{CHILD_TIMEOUT:g} s")
            if not os.read(waiting_r, 1):
                failed = waiter.wait(CHILD_TIMEOUT)
                raise harness.Unmeasurable(f"the waiter failed: {failed and failed.error}")
            early = waiter.wait(harness.block_window())
            if early is not None:  # returned with the flag still down
                return Measured(early.error or "did-not-wait", flag=read_counter(memory, FLAG_AT))
            signalled = time.monotonic()
            signaller = harness.in_child(raise_flag, memory, mutex, cond, timeout=CHILD_TIMEOUT)
            if signaller.error:
                raise harness.Unmeasurable(f"the signalling process failed: {signaller.error}")
            woke = waiter.wait(CHILD_TIMEOUT)
            if woke is None:
                return Measured("not-woken", waited_s=CHILD_TIMEOUT)
            if woke.error:
                return Measured(woke.error)
            return Measured(harness.OK, cond_waits=woke.value["waits"],
                            wake_ms=round((time.monotonic() - signalled) * 1000, 1))
    finally:
        os.close(waiting_r)
        if waiting_w is not None:
            os.close(waiting_w)


# --- a robust mutex whose owner died ----------------------------------------------------------------

def lock_and_die(mutex):
    """Take the mutex and return without unlocking it: the child exits holding it."""
    _libc.pthread_mutex_lock(mutex)
    return "locked"


def lock_after_owner_died(mutex):
    """What pthread_mutex_lock says now; after EOWNERDEAD, make it consistent and unlock."""
    try:
        _libc.pthread_mutex_lock(mutex)
    except OSError as exc:
        if exc.errno != getattr(errno, "EOWNERDEAD", None):
            return {"lock": errno_name(exc)}
        consistent = outcome(_libc.pthread_mutex_consistent, mutex)
        unlocked = outcome(_libc.pthread_mutex_unlock, mutex)
        relocked = outcome(_libc.pthread_mutex_trylock, mutex)
        if relocked == harness.OK:
            _libc.pthread_mutex_unlock(mutex)  # leave it free for pthread_mutex_destroy
        return {"lock": errno_name(exc), "consistent": consistent, "unlock": unlocked,
                "relock": relocked}
    return {"lock": harness.OK, "unlock": outcome(_libc.pthread_mutex_unlock, mutex)}


@observation("sync.pthread_mutex_robust")
def pthread_mutex_robust():
    """Locking a robust process-shared mutex whose owner exited holding it gives EOWNERDEAD."""
    if not supported(*MUTEX_FUNCTIONS, "pthread_mutexattr_setrobust", "pthread_mutex_consistent",
                     "pthread_mutex_trylock"):
        return Measured(harness.UNSUPPORTED, missing="pthread_mutexattr_setrobust")
    with shared_page() as memory, contextlib.ExitStack() as stack:
        try:
            mutex = stack.enter_context(shared_mutex(memory, robust=True))
        except OSError as exc:
            return errno_name(exc)
        owner = harness.in_child(lock_and_die, mutex, timeout=CHILD_TIMEOUT)
        if owner.value != "locked":
            raise harness.Unmeasurable(f"the owner did not exit cleanly: {owner.error}")
        # The owner is reaped: it is dead for certain.  The next lock runs in a child too,
        # since a mutex that is not robust would leave it waiting for ever.
        with harness.Child(lock_after_owner_died, mutex) as taker:
            took = taker.wait(CHILD_TIMEOUT)
        if took is None:
            return Measured(harness.BLOCKS, owner="exited and reaped", waited_s=CHILD_TIMEOUT)
        if took.error:
            raise harness.Unmeasurable(f"the second locker failed: {took.error}")
        detail = {k: v for k, v in took.value.items() if k != "lock"}
        return Measured(took.value["lock"], **detail)


if __name__ == "__main__":
    harness.main()
