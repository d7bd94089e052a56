"""System V IPC through ctypes, and the record of every kernel IPC object a probe makes.

    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600);   ...   shmctl(id, IPC_RMID, NULL);
    int id = semget(key, 1, IPC_CREAT | IPC_EXCL | 0600);     ...   semctl(id, 0, IPC_RMID);
    int id = msgget(key, IPC_CREAT | IPC_EXCL | 0600);        ...   msgctl(id, IPC_RMID, NULL);

Python binds none of these.  The functions come from probes._libc's library search (libc,
and librt/libpthread on older glibc), so IPCMATRIX_MISSING_SYMBOLS hides them here too;
a missing one raises ``_libc.Missing``.

A System V object outlives its creator until reboot or ``ipcrm``, so every object is made
under a fresh random key, and the key is written to the run's record (``.ipc-objects`` in
the runner's work directory) *before* the call that creates it.  Whatever then happens to
the probe, the runner's leftover check (ipcmatrix.runner.sweep_ipc_objects) finds the
object by its key and removes it.  POSIX message queue names are recorded the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

from . import _libc
from .harness import ENV_WORKDIR

# <sys/ipc.h>: the same octal values in glibc, xnu and FreeBSD.
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_NOWAIT = 0o4000
IPC_RMID = 0
# SEM_UNDO is 0x1000 in Linux <linux/sem.h> and 010000 (the same) in xnu and FreeBSD <sys/sem.h>.
SEM_UNDO = 0x1000
# semctl commands differ: Linux <linux/sem.h> GETVAL 12, SETVAL 16; the BSDs <sys/sem.h> 5, 8.
GETVAL = 12 if sys.platform.startswith("linux") else 5
SETVAL = 16 if sys.platform.startswith("linux") else 8
# Linux <linux/shm.h> SHM_NORESERVE: do not account swap for the segment (Linux only).
SHM_NORESERVE = 0o10000 if sys.platform.startswith("linux") else 0

IPC_PRIVATE = 0
RECORD_FILE = ".ipc-objects"
TAKEN = "-taken"                       # kind suffix: a recorded key that proved to be another's

_SHMAT_FAILED = ctypes.c_void_p(-1).value


class Sembuf(ctypes.Structure):
    """struct sembuf: unsigned short sem_num; short sem_op; short sem_flg (every platform)."""
    _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                ("sem_flg", ctypes.c_short)]


def ignore_sigsys():
    """A system call the kernel lacks (FreeBSD without the sysvshm or mqueuefs module, or
    in a jail without allow.sysvipc) raises SIGSYS, whose default kills us; ignored, the
    call fails with ENOSYS, which is a measured answer."""
    if hasattr(signal, "SIGSYS"):
        with contextlib.suppress(ValueError, OSError):  # not in the main thread
            signal.signal(signal.SIGSYS, signal.SIG_IGN)


def _check(result):
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


# --- the record -------------------------------------------------------------------------

def record_path():
    """Where the runner looks for this run's objects; None for a standalone run."""
    workdir = os.environ.get(ENV_WORKDIR)
    return os.path.join(workdir, RECORD_FILE) if workdir else None


def record(kind, name):
    """Note ``kind`` (shm, sem, msg, mq) and key or name before the object may exist.

    One short append per object, flushed by close(): a probe killed at any later moment
    has already told the runner what to look for.
    """
    path = record_path()
    if path:
        with open(path, "a", encoding="ascii") as out:
            out.write(f"{kind} {name}\n")


def read_record(path):
    """The (kind, name) pairs a run recorded, in order, without duplicates."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return []
    pairs = [tuple(line.split(" ", 1)) for line in lines if " " in line]
    taken = {(kind[:-len(TAKEN)], name) for kind, name in pairs if kind.endswith(TAKEN)}
    return [pair for pair in dict.fromkeys(pairs)
            if pair not in taken and not pair[0].endswith(TAKEN)]


def fresh_key():
    """A random key_t (never IPC_PRIVATE): a positive 31-bit number, the same on every ABI."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF or 1


def create(kind, make, attempts=8):
    """``make(key)`` under a fresh recorded key, retrying a key someone else holds (EEXIST).

    Returns (key, id).  ``make`` must pass IPC_CREAT | IPC_EXCL.
    """
    for _ in range(attempts):
        key = fresh_key()
        record(kind, key)
        try:
            return key, make(key)
        except FileExistsError:
            record(kind + TAKEN, key)   # another's object: the runner must leave it alone
            continue
    raise OSError(17, f"{attempts} random keys were all taken")


# --- shared memory ------------------------------------------------------------------------

def shmget(key, size, flags):
    fn = _libc.function("shmget", ctypes.c_int, [ctypes.c_int, ctypes.c_size_t, ctypes.c_int])
    return _check(fn(key, size, flags))


def shmat(shmid, flags=0):
    fn = _libc.function("shmat", ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int])
    address = fn(shmid, None, flags)
    if address == _SHMAT_FAILED:
        _check(-1)
    return address


def shmdt(address):
    _check(_libc.function("shmdt", ctypes.c_int, [ctypes.c_void_p])(address))


def shm_remove(shmid):
    fn = _libc.function("shmctl", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p])
    _check(fn(shmid, IPC_RMID, None))


# --- semaphores -----------------------------------------------------------------------------

def semget(key, nsems, flags):
    fn = _libc.function("semget", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int])
    return _check(fn(key, nsems, flags))


def _semctl():
    # Variadic (int semctl(int, int, int, ...)): only the fixed arguments are typed.
    return _libc.function("semctl", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int])


def sem_getval(semid, number=0):
    return _check(_semctl()(semid, number, GETVAL))


def sem_remove(semid):
    _check(_semctl()(semid, 0, IPC_RMID))


def semop(semid, op, flags=0, number=0):
    fn = _libc.function("semop", ctypes.c_int,
                        [ctypes.c_int, ctypes.POINTER(Sembuf), ctypes.c_size_t])
    _check(fn(semid, ctypes.byref(Sembuf(number, op, flags)), 1))


def semtimedop(semid, op, seconds, flags=0, number=0):
    """semop bounded by a relative timeout (Linux; absent from macOS's and FreeBSD's libc)."""
    fn = _libc.function("semtimedop", ctypes.c_int,
                        [ctypes.c_int, ctypes.POINTER(Sembuf), ctypes.c_size_t,
                         ctypes.POINTER(_libc.Timespec)])
    whole = int(seconds)
    timeout = _libc.Timespec(whole, int((seconds - whole) * 1e9))
    _check(fn(semid, ctypes.byref(Sembuf(number, op, flags)), 1, ctypes.byref(timeout)))


# --- message queues -----------------------------------------------------------------------------

def msgget(key, flags):
    fn = _libc.function("msgget", ctypes.c_int, [ctypes.c_int, ctypes.c_int])
    return _check(fn(key, flags))


def msgsnd(msqid, size, flags=0, mtype=1, fill=b"m"):
    """Send one message of ``size`` text bytes (struct msgbuf: a long mtype, then the text)."""
    fn = _libc.function("msgsnd", ctypes.c_int,
                        [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
    buffer = ctypes.create_string_buffer(ctypes.sizeof(ctypes.c_long) + size)
    ctypes.c_long.from_buffer(buffer).value = mtype
    ctypes.memset(ctypes.addressof(buffer) + ctypes.sizeof(ctypes.c_long), fill[0], size)
    _check(fn(msqid, buffer, size, flags))


def msgrcv(msqid, size, flags=0, mtype=0):
    """Receive one message into room for ``size`` text bytes; returns its length."""
    fn = _libc.function("msgrcv", ctypes.c_ssize_t,
                        [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long,
                         ctypes.c_int])
    buffer = ctypes.create_string_buffer(ctypes.sizeof(ctypes.c_long) + size)
    return _check(fn(msqid, buffer, size, mtype, flags))


def msg_remove(msqid):
    fn = _libc.function("msgctl", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p])
    _check(fn(msqid, IPC_RMID, None))


# --- one object of each kind, created under a recorded key and always removed -----------------

GET = {"shm": lambda key: shmget(key, 0, 0), "sem": lambda key: semget(key, 0, 0),
       "msg": lambda key: msgget(key, 0)}
REMOVE = {"shm": shm_remove, "sem": sem_remove, "msg": msg_remove}


@contextlib.contextmanager
def removed_after(kind, make):
    """Create an object with ``make(key)`` under a recorded key; IPC_RMID it on the way out.

    If the probe is interrupted between the kernel creating the object and ``make``
    returning its id, the id is found again from the key.
    """
    key = None
    ident = None
    try:
        key, ident = create(kind, make)
        yield ident
    finally:
        if ident is None and key is not None:
            with contextlib.suppress(OSError, _libc.Missing):
                ident = GET[kind](key)
        if ident is not None:
            with contextlib.suppress(OSError, _libc.Missing):
                REMOVE[kind](ident)


def shm_segment(size, flags=0):
    return removed_after("shm", lambda key: shmget(key, size, IPC_CREAT | IPC_EXCL | 0o600 | flags))


def semaphore_set(nsems=1):
    return removed_after("sem", lambda key: semget(key, nsems, IPC_CREAT | IPC_EXCL | 0o600))


def message_queue():
    return removed_after("msg", lambda key: msgget(key, IPC_CREAT | IPC_EXCL | 0o600))
