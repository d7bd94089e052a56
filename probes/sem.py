"""Synchronising processes: unnamed and named POSIX semaphores, process-shared mutexes and
condition variables, robust mutexes whose owner died.

    sem_t *s = mmap(... MAP_SHARED | MAP_ANONYMOUS ...);
    sem_init(s, 1, 0);                  /* pshared = 1: usable by every process mapping it */
    if (fork() == 0) { sem_wait(s); _exit(0); }
    sem_post(s);

    sem_t *n = sem_open("/name", O_CREAT | O_EXCL, 0600, 0);   ...   sem_unlink("/name");

Python binds none of this; probes._libc calls libc through ctypes, and a function the
C library lacks makes its observation "unsupported".  A waiter always runs in another
process that is killed at its deadline, so no observation can hang in sem_wait or
pthread_mutex_lock.  Named semaphores get names unique to this run and are unlinked
whatever happens: on macOS a leaked one lives until reboot.
"""
import contextlib
import errno
import mmap
import os
import select
import subprocess
import sys
import time

from . import _libc, harness
from .harness import Measured, errno_name, experiment, observation, outcome
from .shm import MAP_ANONYMOUS, NAME_CEILING, PAGE, padded

CHILD_TIMEOUT = harness.scaled(5.0)
PROCESSES = 4
ROUNDS = 2000            # increments per process under the mutex


def supported(*functions):
    return all(_libc.available(name) for name in functions)


def shared_page():
    """One page of MAP_SHARED|MAP_ANONYMOUS memory, inherited by forked children."""
    return mmap.mmap(-1, PAGE, flags=mmap.MAP_SHARED | MAP_ANONYMOUS)


def handoff(wait_in_child, post):
    """A forked child runs ``wait_in_child``; it must still be waiting until we ``post``.

    "ok" when the child waited and then woke; otherwise what it did instead.
    """
    with harness.Child(wait_in_child) as child:
        early = child.wait(harness.block_window())
        if early is not None:
            return Measured("did-not-wait" if early.value == harness.OK else early.value or early.error)
        posted = time.monotonic()
        post()
        woke = child.wait(CHILD_TIMEOUT)
        if woke is None:
            return Measured("not-woken", waited_s=CHILD_TIMEOUT)
        return Measured(woke.value or woke.error, waited_s=harness.block_window(),
                        wake_ms=round((time.monotonic() - posted) * 1000, 1))


# --- an unnamed semaphore in shared memory ---------------------------------------------------

@observation("sem.unnamed_process_shared")
def unnamed_process_shared():
    """sem_init(pshared=1) in MAP_SHARED memory: a forked child's sem_wait waits for our sem_post."""
    if not supported("sem_init", "sem_destroy", "sem_wait", "sem_post"):
        return harness.UNSUPPORTED
    with shared_page() as memory:
        sem = _libc.address_in(memory)
        try:
            _libc.sem_init(sem, 1, 0)
        except OSError as exc:  # macOS: a stub that always fails with ENOSYS
            return errno_name(exc)
        try:
            return handoff(lambda: outcome(_libc.sem_wait, sem), lambda: _libc.sem_post(sem))
        finally:
            _libc.sem_destroy(sem)


# --- named semaphores -------------------------------------------------------------------------------

@contextlib.contextmanager
def named_semaphore(value, name=None):
    """sem_open(unique name, O_CREAT|O_EXCL, 0600, value); closed and unlinked afterwards."""
    with _libc.Names(_libc.sem_unlink) as names:
        name = names.add(name or harness.unique_name("n"))
        sem = _libc.sem_open(name, os.O_CREAT | os.O_EXCL, 0o600, value)
        try:
            yield name, sem
        finally:
            _libc.sem_close(sem)


# Another interpreter, not a fork: it knows only the semaphore's name.
NAMED_WAITER = """
import importlib, sys
sys.path.insert(0, sys.argv[1])
_libc = importlib.import_module(sys.argv[3] + "._libc")  # a -c script has no package
sem = _libc.sem_open(sys.argv[2], 0)
print("opened", flush=True)
_libc.sem_wait(sem)
print("woken", flush=True)
_libc.sem_close(sem)
"""


def read_line(stream, timeout):
    """One line from a child's stdout within ``timeout`` s: the text, "" at EOF, None if none came."""
    fd, line = stream.fileno(), b""
    end = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        byte = os.read(fd, 1)
        if not byte:
            return line.decode()
        line += byte
    return line.decode().strip()


def kit_root():
    """The directory holding the probes package, for a fresh interpreter to import it from."""
    return os.path.dirname(os.path.dirname(os.path.abspath(_libc.__file__)))


@observation("sem.named.across_processes")
def named_across_processes():
    """An unrelated process that sem_open()s a name waits in sem_wait until we sem_post it."""
    if not supported("sem_open", "sem_close", "sem_unlink", "sem_wait", "sem_post"):
        return harness.UNSUPPORTED
    with named_semaphore(0) as (name, sem), subprocess.Popen(
            [sys.executable, "-I", "-c", NAMED_WAITER, kit_root(), name, __package__],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE) as waiter:
        try:
            said = read_line(waiter.stdout, CHILD_TIMEOUT)
            if said is None:  # silence is slowness, not a refusal
                raise harness.Unmeasurable(
                    f"the other process did not say within {CHILD_TIMEOUT:g} s whether it "
                    f"opened the semaphore (a slow machine? try --timeout-multiplier)")
            if said != "opened":
                waiter.kill()
                stderr = waiter.stderr.read().decode(errors="replace").strip()
                reason = stderr.splitlines()[-1] if stderr else f"it said {said!r}"
                raise harness.Unmeasurable(f"the other process could not open the semaphore: "
                                           f"{reason}")
            if read_line(waiter.stdout, harness.block_window()) is not None:
                return "did-not-wait"
            posted = time.monotonic()
            _libc.sem_post(sem)
            woke = read_line(waiter.stdout, CHILD_TIMEOUT)
            return Measured(harness.OK if woke == "woken" else "not-woken",
                            wake_ms=round((time.monotonic() - posted) * 1000, 1))
        finally:
            waiter.kill()
            waiter.wait()


def try_sem_name(names, name):
    """sem_open(name, O_CREAT|O_EXCL) then sem_close and sem_unlink: "ok" or errno."""
    names.add(name)
    try:
        sem = _libc.sem_open(name, os.O_CREAT | os.O_EXCL, 0o600, 1)
    except OSError as exc:
        return errno_name(exc)
    finally:
        names.release()  # unlinked at once, created or not
    _libc.sem_close(sem)
    return harness.OK


@experiment
def sem_name_limit():
    """The longest accepted semaphore name (counting its leading "/"), and the error one past it."""
    base = harness.unique_name("n")
    with _libc.Names(_libc.sem_unlink) as names:
        longest, past, tries = harness.largest_accepted(
            lambda length: try_sem_name(names, padded(base, length)), len(base), NAME_CEILING)
    return {"longest": longest, "past": past, "tries": tries}


@observation("sem.named.name_max")
def named_name_max():
    """sem_open accepts names up to this many characters, counting the leading "/"."""
    if not supported("sem_open", "sem_close", "sem_unlink"):
        return harness.UNSUPPORTED
    found = sem_name_limit()
    return Measured(found["longest"], tries=found["tries"])


@observation("sem.named.too_long")
def named_too_long():
    """sem_open of a name one character longer than the longest accepted fails with this errno."""
    if not supported("sem_open", "sem_close", "sem_unlink"):
        return harness.UNSUPPORTED
    return sem_name_limit()["past"]


@observation("sem.getvalue")
def getvalue():
    """sem_getvalue reads 2 from a semaphore opened with value 1 and posted once."""
    if not supported("sem_open", "sem_close", "sem_unlink", "sem_post", "sem_getvalue"):
        return harness.UNSUPPORTED
    with named_semaphore(1) as (_, sem):
        _libc.sem_post(sem)
        try:
            return _libc.sem_getvalue(sem)
        except OSError as exc:  # macOS: ENOSYS
            return errno_name(exc)


@observation("sem.timedwait")
def timedwait():
    """sem_timedwait on a semaphore nobody posts gives up with ETIMEDOUT at its deadline."""
    if not supported("sem_open", "sem_close", "sem_unlink", "sem_timedwait"):
        return Measured(harness.UNSUPPORTED, missing="sem_timedwait")
    window = harness.block_window()
    with named_semaphore(0) as (_, sem):
        started = time.monotonic()
        value = outcome(_libc.sem_timedwait, sem, window)
        waited = time.monotonic() - started
    return Measured(value, deadline_s=window, waited_ms=round(waited * 1000, 1))


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
