"""System V IPC: shared memory segments, semaphore sets and message queues.

    int id = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    char *p = shmat(id, NULL, 0);  ...  shmdt(p);  shmctl(id, IPC_RMID, NULL);

    struct sembuf up = {0, +1, SEM_UNDO};  semop(semid, &up, 1);   /* undone at exit */

    msgsnd(msqid, &msg, len, IPC_NOWAIT);    /* EAGAIN once the queue holds msg_qbytes */

All three kernels have the three kinds; their limits and lifecycles differ (macOS's
kern.sysv.shmmax is 4 MiB; Linux lets a segment marked IPC_RMID be attached again).
Every object is made under a fresh key the runner knows about (probes._sysv) and
removed with IPC_RMID before its observation ends, whatever happens.
"""
import ctypes
import time

from . import _libc, _sysv, harness
from .harness import OK, UNSUPPORTED, Measured, errno_name, experiment, observation

CHILD_TIMEOUT = 5.0
PAGE = 4096
# No size_t is larger: a segment search that reaches it has found no limit.
SIZE_CEILING = 2 ** 64 - 1
MESSAGE = 64
# Past any msgmax in use (Linux 8 KiB, the BSDs 2-16 KiB): the largest buffer ever allocated.
MESSAGE_CEILING = 1 << 24


def unsupported(*names):
    """``"unsupported"`` with the missing function's name, else None."""
    for name in names:
        if not _libc.available(name):
            return Measured(UNSUPPORTED, missing=name)
    return None


def attempt(fn, *args):
    """Run ``fn``: "ok", or the errno name of its failure."""
    try:
        fn(*args)
    except OSError as exc:
        return errno_name(exc)
    return OK


# --- shared memory ----------------------------------------------------------------------

SHM_FUNCTIONS = ("shmget", "shmat", "shmdt", "shmctl")


def shm_round_trip():
    with _sysv.shm_segment(PAGE) as shmid:
        address = _sysv.shmat(shmid)
        try:
            ctypes.memmove(address, b"sysv", 4)
            again = _sysv.shmat(shmid)
            try:
                seen = ctypes.string_at(again, 4)
            finally:
                _sysv.shmdt(again)
        finally:
            _sysv.shmdt(address)
    if seen != b"sysv":
        raise harness.Unmeasurable(f"a second attachment saw {seen!r}, not b'sysv'")


@observation("sysv.shm.supported")
def shm_supported():
    """shmget, shmat, shmdt and shmctl(IPC_RMID) work for this process ("ok" or the errno)."""
    if missing := unsupported(*SHM_FUNCTIONS):
        return missing
    return attempt(shm_round_trip)


def try_segment(size):
    """shmget of ``size`` bytes, never attached and removed at once: "ok" or the errno.

    Linux and the BSDs only note a new segment's size; gVisor reserves its whole range
    in the sandbox's memory file, at a cost that grows with the size (2^56 bytes took
    0.5 s there, 2^60 15 s).  An accepted call that slow ends the search with that
    reason, rather than spending minutes per step near an edge at 2^63.
    """
    started = time.monotonic()
    answer = attempt(_segment_once, size)
    took = time.monotonic() - started
    if answer == OK and took > slow_attempt_s():
        raise harness.Unmeasurable(
            f"shmget of {size} bytes took {took:.2f} s: this kernel pays for a segment's size "
            f"when it creates it, so the edge cannot be searched within the budget")
    return answer


def slow_attempt_s():
    """Far beyond what noting a size costs (microseconds); scales with the block window."""
    return harness.block_window() * 2


def _segment_once(size):
    with _sysv.shm_segment(size, _sysv.SHM_NORESERVE):
        pass


@observation("sysv.shm.max_segment")
def shm_max_segment():
    """The largest segment shmget creates (found by search; never attached), against shmmax."""
    if missing := unsupported(*SHM_FUNCTIONS):
        return missing
    largest, past, tries = harness.largest_accepted(try_segment, PAGE, SIZE_CEILING)
    # Linux accounts a segment's pages against memory unless SHM_NORESERVE says not to;
    # with it the edge is the kernel's own limits, not this machine's free memory.
    return Measured(largest, one_past=past, tries=tries,
                    shm_noreserve=bool(_sysv.SHM_NORESERVE))


@observation("sysv.shm.attach_after_rmid")
def shm_attach_after_rmid():
    """shmat of a segment already marked IPC_RMID but still attached works ("ok"; BSDs: EINVAL)."""
    if missing := unsupported(*SHM_FUNCTIONS):
        return missing
    with _sysv.shm_segment(PAGE) as shmid:
        first = _sysv.shmat(shmid)
        try:
            _sysv.shm_remove(shmid)
            try:
                second = _sysv.shmat(shmid)
            except OSError as exc:
                return errno_name(exc)
            _sysv.shmdt(second)
            return OK
        finally:
            _sysv.shmdt(first)  # the last detach destroys the segment


# --- semaphores ----------------------------------------------------------------------------

SEM_FUNCTIONS = ("semget", "semop", "semctl")


def sem_round_trip():
    with _sysv.semaphore_set() as semid:
        _sysv.semop(semid, +1)
        _sysv.semop(semid, -1, _sysv.IPC_NOWAIT)
        return _sysv.sem_getval(semid)


@observation("sysv.sem.supported")
def sem_supported():
    """semget, semop (up, then a non-blocking down) and semctl work ("ok" or the errno)."""
    if missing := unsupported(*SEM_FUNCTIONS):
        return missing
    try:
        left = sem_round_trip()
    except OSError as exc:
        return errno_name(exc)
    if left != 0:
        raise harness.Unmeasurable(f"up then down left the semaphore at {left}, not 0")
    return OK


def raise_with_undo(semid):
    """In the child: +1 with SEM_UNDO, and the value it then saw; exiting undoes the +1."""
    _sysv.semop(semid, +1, _sysv.SEM_UNDO)
    return _sysv.sem_getval(semid)


@observation("sysv.sem.undo_on_exit")
def sem_undo_on_exit():
    """A child's semop(+1, SEM_UNDO) is reverted when the child exits (the value is 0 again)."""
    if missing := unsupported(*SEM_FUNCTIONS):
        return missing
    with _sysv.semaphore_set() as semid:
        child = harness.in_child(raise_with_undo, semid, timeout=CHILD_TIMEOUT)
        if child.error or child.value != 1:
            raise harness.Unmeasurable(f"the child's SEM_UNDO +1 did not happen: "
                                       f"{child.error or child.value}")
        after = _sysv.sem_getval(semid)
    return Measured(after == 0, in_child=child.value, after_exit=after)


@observation("sysv.sem.timedop")
def sem_timedop():
    """semtimedop of a down on a zero semaphore returns EAGAIN after its timeout ("ok")."""
    if missing := unsupported(*SEM_FUNCTIONS, "semtimedop"):
        return missing
    window = harness.block_window()
    with _sysv.semaphore_set() as semid:
        started = time.monotonic()
        answer = attempt(_sysv.semtimedop, semid, -1, window)
        waited = time.monotonic() - started
    timed_out = answer == "EAGAIN" and waited >= window * 0.8
    return Measured(OK if timed_out else answer, waited_ms=round(waited * 1000, 1),
                    timeout_ms=round(window * 1000, 1))


# --- message queues ------------------------------------------------------------------------

MSG_FUNCTIONS = ("msgget", "msgsnd", "msgrcv", "msgctl")


@observation("sysv.msg.supported")
def msg_supported():
    """msgget, msgsnd, msgrcv (non-blocking) and msgctl work ("ok" or the errno)."""
    if missing := unsupported(*MSG_FUNCTIONS):
        return missing
    try:
        with _sysv.message_queue() as msqid:
            _sysv.msgsnd(msqid, MESSAGE, _sysv.IPC_NOWAIT)
            got = _sysv.msgrcv(msqid, MESSAGE, _sysv.IPC_NOWAIT)
    except OSError as exc:
        return errno_name(exc)
    if got != MESSAGE:
        raise harness.Unmeasurable(f"msgrcv returned {got} bytes of a {MESSAGE}-byte message")
    return OK


def size_check(msqid, size):
    """msgsnd of ``size`` bytes (IPC_NOWAIT), taken back out if it went in.

    "ok" when the message passed the size check: sent, or refused only for want of room
    in the queue (EAGAIN: Linux checks msgmax first, so a queue smaller than msgmax
    must not hide the limit); else the errno.
    """
    answer = attempt(_sysv.msgsnd, msqid, size, _sysv.IPC_NOWAIT)
    if answer == OK:
        _sysv.msgrcv(msqid, size, _sysv.IPC_NOWAIT)
    return OK if answer == "EAGAIN" else answer


@experiment
def message_size_limit():
    """The largest message msgsnd's size check passes, and its answer one byte past it."""
    with _sysv.message_queue() as msqid:
        largest, past, tries = harness.largest_accepted(
            lambda size: size_check(msqid, size), 1, MESSAGE_CEILING)
    return {"largest": largest, "past": past, "tries": tries}


def fill(msqid, largest):
    """Send as large messages as are taken, halving the size at each EAGAIN, down to 1 byte.

    About queue/largest + log2(largest) sends: the bytes held when even 1 byte is refused.
    """
    held, sends, size = 0, 0, largest
    while size >= 1:
        answer = attempt(_sysv.msgsnd, msqid, size, _sysv.IPC_NOWAIT)
        sends += 1
        if answer == OK:
            held += size
        elif answer == "EAGAIN":
            size //= 2
        else:
            raise harness.Unmeasurable(f"msgsnd of {size} bytes into a filling queue: {answer}")
    return held, sends


@observation("sysv.msg.queue_bytes")
def msg_queue_bytes():
    """A queue holds this many message bytes before a non-blocking msgsnd gets EAGAIN (msgmnb)."""
    if missing := unsupported(*MSG_FUNCTIONS):
        return missing
    largest = message_size_limit()["largest"]
    with _sysv.message_queue() as msqid:
        held, sends = fill(msqid, largest)
    return Measured(held, sends=sends, largest_message=largest)


@observation("sysv.msg.too_big")
def msg_too_big():
    """msgsnd of one byte more than the largest message allowed (msgmax) fails: EINVAL."""
    if missing := unsupported(*MSG_FUNCTIONS):
        return missing
    found = message_size_limit()
    return Measured(found["past"], largest_message=found["largest"], tries=found["tries"])


if __name__ == "__main__":
    _sysv.ignore_sigsys()
    harness.main()
