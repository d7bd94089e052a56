"""Synchronising processes with POSIX semaphores, unnamed in shared memory and named.

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
        early = child.wait_blocked()   # a window from the wait on, never from the fork
        if early is not harness.BLOCKS:
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


def probes_package():
    """(the directory holding the probes package, its name there), for a fresh interpreter
    with no site to import _libc from, however the kit was installed (``probes`` in a
    checkout, ``ipcmatrix/probes`` in site-packages: the same directory name)."""
    package = os.path.dirname(os.path.abspath(_libc.__file__))
    return os.path.dirname(package), os.path.basename(package)


@observation("sem.named.across_processes")
def named_across_processes():
    """An unrelated process that sem_open()s a name waits in sem_wait until we sem_post it."""
    if not supported("sem_open", "sem_close", "sem_unlink", "sem_wait", "sem_post"):
        return harness.UNSUPPORTED
    with named_semaphore(0) as (name, sem), subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", NAMED_WAITER, probes_package()[0], name,
             probes_package()[1]],
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


if __name__ == "__main__":
    harness.main()
