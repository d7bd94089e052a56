"""The C library through ctypes: POSIX shm, semaphores and pthread mutexes.

Python binds none of these, so the shm and sem probes call libc directly.  Every
symbol is looked up in one place, ``function``, which also honours
IPCMATRIX_MISSING_SYMBOLS (a comma list of names to treat as absent) so that a test
here can take the path a platform without the function takes (sem_timedwait on
macOS).  A missing function raises ``Missing``; probes turn that into "unsupported".

Failures come back as OSError with the C errno, as from the os module.
Standard library only.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import time

ENV_MISSING = "IPCMATRIX_MISSING_SYMBOLS"

# sem_t is 32 bytes on glibc x86_64, 16 on FreeBSD, 4 (an int) on macOS; pthread_mutex_t
# is 40 on glibc x86_64, 64 on macOS, a pointer on FreeBSD (libthr keeps the real object
# in an off-page).  Reserve far more than any of them so one layout fits every platform.
SEM_STORAGE = 128
MUTEX_STORAGE = 256
MUTEXATTR_STORAGE = 128
# pthread_cond_t is 48 bytes on glibc x86_64 and macOS (arm64 and x86_64), a pointer on
# FreeBSD; pthread_condattr_t is 4 on glibc, 16 on macOS.
COND_STORAGE = 128
CONDATTR_STORAGE = 128

# PTHREAD_PROCESS_SHARED is 1 in glibc <pthread.h>, macOS <pthread/pthread.h> and FreeBSD
# <pthread.h> alike.
PTHREAD_PROCESS_SHARED = 1
# PTHREAD_MUTEX_ROBUST is 1 in glibc <pthread.h> and FreeBSD <pthread.h>; macOS has none.
PTHREAD_MUTEX_ROBUST = 1

# SEM_FAILED is ((sem_t *)0) in glibc and FreeBSD <semaphore.h>, ((sem_t *)-1) on macOS.
_SEM_FAILED = (None, 0, ctypes.c_void_p(-1).value)


class Missing(Exception):
    """This C library has no such function (or a test pretends it has none)."""


class Timespec(ctypes.Structure):
    """struct timespec: time_t then long, both 64-bit on the LP64 platforms the kit runs on."""
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@functools.cache
def libraries():
    """The process's own symbols (libc is loaded already), then libc, librt and libpthread
    by name where they exist.

    glibc before 2.34 keeps shm_open in librt and sem_*/pthread_mutexattr_setpshared in
    libpthread; from 2.34, and on macOS and FreeBSD, libc has them all.  Looking names up
    costs ctypes.util a run of ldconfig or the compiler each, so it is done only for a
    symbol the process does not have (``_named_libraries``).
    """
    return [ctypes.CDLL(None, use_errno=True)]


@functools.cache
def _named_libraries():
    import ctypes.util
    found = []
    for name in ("c", "rt", "pthread"):
        path = ctypes.util.find_library(name)
        if path:
            with contextlib.suppress(OSError):
                found.append(ctypes.CDLL(path, use_errno=True))
    return found


def _lazily(make):
    yield from make()


def missing_by_request():
    return set(filter(None, (s.strip() for s in os.environ.get(ENV_MISSING, "").split(","))))


def function(name, restype=ctypes.c_int, argtypes=None):
    """The C function ``name`` from the first library that has it; raise Missing if none does.

    For variadic functions give only the fixed arguments' types: ctypes then makes a
    variadic call, which Apple's arm64 ABI needs (variadic arguments go on the stack).
    """
    if name in missing_by_request():
        raise Missing(name)
    for library in itertools.chain(libraries(), _lazily(_named_libraries)):
        try:
            fn = getattr(library, name)
        except AttributeError:
            continue
        fn.restype = restype
        if argtypes is not None:
            fn.argtypes = argtypes
        return fn
    raise Missing(name)


def available(name):
    try:
        function(name)
    except Missing:
        return False
    return True


def _fail():
    number = ctypes.get_errno()
    raise OSError(number, os.strerror(number))


def _check(result):
    """-1 and errno, the POSIX convention."""
    if result == -1:
        _fail()
    return result


def _check_code(code):
    """An error number returned directly, the pthread convention."""
    if code:
        raise OSError(code, os.strerror(code))


def _name(name):
    return os.fsencode(name)


# --- POSIX shared memory -------------------------------------------------------------------

def shm_open(name, flags, mode=0o600):
    # Variadic on macOS (int shm_open(const char *, int, ...)): mode goes as an extra argument.
    fn = function("shm_open", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int])
    return _check(fn(_name(name), flags, ctypes.c_uint(mode)))


def shm_unlink(name):
    fn = function("shm_unlink", ctypes.c_int, [ctypes.c_char_p])
    _check(fn(_name(name)))


# --- POSIX semaphores ----------------------------------------------------------------------

def sem_open(name, flags, mode=0o600, value=0):
    """A named semaphore's handle (an address); OSError on SEM_FAILED."""
    fn = function("sem_open", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int])
    handle = fn(_name(name), flags, ctypes.c_uint(mode), ctypes.c_uint(value))
    if handle in _SEM_FAILED:
        _fail()
    return handle


def sem_close(sem):
    _check(function("sem_close", ctypes.c_int, [ctypes.c_void_p])(sem))


def sem_unlink(name):
    _check(function("sem_unlink", ctypes.c_int, [ctypes.c_char_p])(_name(name)))


def sem_init(sem, pshared, value):
    fn = function("sem_init", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint])
    _check(fn(sem, pshared, value))


def sem_destroy(sem):
    _check(function("sem_destroy", ctypes.c_int, [ctypes.c_void_p])(sem))


def sem_wait(sem):
    _check(function("sem_wait", ctypes.c_int, [ctypes.c_void_p])(sem))


def sem_trywait(sem):
    _check(function("sem_trywait", ctypes.c_int, [ctypes.c_void_p])(sem))


def sem_post(sem):
    _check(function("sem_post", ctypes.c_int, [ctypes.c_void_p])(sem))


def sem_getvalue(sem):
    fn = function("sem_getvalue", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)])
    value = ctypes.c_int(-1)
    _check(fn(sem, ctypes.byref(value)))
    return value.value


def sem_timedwait(sem, seconds):
    """sem_timedwait with an absolute CLOCK_REALTIME deadline ``seconds`` from now."""
    fn = function("sem_timedwait", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(Timespec)])
    deadline = time.clock_gettime_ns(time.CLOCK_REALTIME) + int(seconds * 1e9)
    abstime = Timespec(deadline // 1_000_000_000, deadline % 1_000_000_000)
    _check(fn(sem, ctypes.byref(abstime)))


# --- pthread mutexes ------------------------------------------------------------------------

def pthread_mutexattr_init(attr):
    _check_code(function("pthread_mutexattr_init", ctypes.c_int, [ctypes.c_void_p])(attr))


def pthread_mutexattr_setpshared(attr, pshared):
    fn = function("pthread_mutexattr_setpshared", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int])
    _check_code(fn(attr, pshared))


def pthread_mutexattr_destroy(attr):
    _check_code(function("pthread_mutexattr_destroy", ctypes.c_int, [ctypes.c_void_p])(attr))


def pthread_mutex_init(mutex, attr):
    fn = function("pthread_mutex_init", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p])
    _check_code(fn(mutex, attr))


def pthread_mutex_lock(mutex):
    _check_code(function("pthread_mutex_lock", ctypes.c_int, [ctypes.c_void_p])(mutex))


def pthread_mutex_unlock(mutex):
    _check_code(function("pthread_mutex_unlock", ctypes.c_int, [ctypes.c_void_p])(mutex))


def pthread_mutex_destroy(mutex):
    _check_code(function("pthread_mutex_destroy", ctypes.c_int, [ctypes.c_void_p])(mutex))


def pthread_mutexattr_setrobust(attr, robust):
    """Robust mutexes (POSIX 2008); macOS's libpthread has no such function."""
    fn = function("pthread_mutexattr_setrobust", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int])
    _check_code(fn(attr, robust))


def pthread_mutex_trylock(mutex):
    _check_code(function("pthread_mutex_trylock", ctypes.c_int, [ctypes.c_void_p])(mutex))


def pthread_mutex_consistent(mutex):
    _check_code(function("pthread_mutex_consistent", ctypes.c_int, [ctypes.c_void_p])(mutex))


# --- pthread condition variables ------------------------------------------------------------

def pthread_condattr_init(attr):
    _check_code(function("pthread_condattr_init", ctypes.c_int, [ctypes.c_void_p])(attr))


def pthread_condattr_setpshared(attr, pshared):
    fn = function("pthread_condattr_setpshared", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int])
    _check_code(fn(attr, pshared))


def pthread_condattr_destroy(attr):
    _check_code(function("pthread_condattr_destroy", ctypes.c_int, [ctypes.c_void_p])(attr))


def pthread_cond_init(cond, attr):
    fn = function("pthread_cond_init", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p])
    _check_code(fn(cond, attr))


def pthread_cond_wait(cond, mutex):
    fn = function("pthread_cond_wait", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p])
    _check_code(fn(cond, mutex))


def pthread_cond_signal(cond):
    _check_code(function("pthread_cond_signal", ctypes.c_int, [ctypes.c_void_p])(cond))


def pthread_cond_destroy(cond):
    _check_code(function("pthread_cond_destroy", ctypes.c_int, [ctypes.c_void_p])(cond))


# --- namespaces (Linux) ----------------------------------------------------------------------

def unshare(flags):
    """unshare(2): os.unshare from Python 3.12, the C library's before that."""
    if "unshare" in missing_by_request():
        raise Missing("unshare")
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    _check(function("unshare", ctypes.c_int, [ctypes.c_int])(flags))


# --- memory and names --------------------------------------------------------------------------

def address_in(mapping, offset=0):
    """The address of byte ``offset`` of an mmap, valid while the mapping stays open.

    The temporary ctypes view is dropped at once, so the mmap can still be closed.
    """
    return ctypes.addressof(ctypes.c_char.from_buffer(mapping, offset))


class Names:
    """Every shm or semaphore name a probe may have created, unlinked when the block ends.

    A name is recorded *before* the call that may create it, so an exception or a
    SIGALRM anywhere afterwards cannot leak it (on macOS a semaphore lives until reboot).
    """

    # What the runner's leftover check calls each kind (a probe killed before the block
    # ends cannot unlink: the runner does, from the run's record).
    KINDS = {"sem_unlink": "posix-sem", "shm_unlink": "posix-shm"}

    def __init__(self, unlink):
        self._unlink = unlink
        self._kind = self.KINDS.get(getattr(unlink, "__name__", ""))
        self._names = []
        self.unlinked = []

    def add(self, name):
        self._names.append(name)
        if self._kind:
            from . import _sysv  # it imports this module: only when a name is made
            _sysv.record(self._kind, name)
        return name

    def release(self):
        while self._names:
            name = self._names.pop()
            try:
                self._unlink(name)
            except (OSError, Missing):
                continue  # never created (too long, refused): nothing to remove
            self.unlinked.append(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
