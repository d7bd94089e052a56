"""POSIX message queues: mq_open, mq_send, mq_receive, their limits and notification.

    struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 16};
    mqd_t q = mq_open("/name", O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    mq_send(q, "a", 1, 5);                 /* priority 5: received before priority 1 */
    mq_receive(q, buf, attr.mq_msgsize, &prio);
    mq_close(q);  mq_unlink("/name");

Linux has them (librt before glibc 2.34, libc after); FreeBSD only with the mqueuefs
module loaded (else the system call fails with ENOSYS); macOS has none ("unsupported").
Every wait is bounded (mq_timedsend / mq_timedreceive to a deadline, O_NONBLOCK), and
every queue is made under a name unique to this run, recorded for the runner before
mq_open, and unlinked before its observation ends.
"""
import contextlib
import ctypes
import errno
import os
import signal
import sys
import time

from . import _libc, _sysv, harness
from .harness import BLOCKS, OK, UNSUPPORTED, Measured, errno_name, experiment, observation

FREEBSD = sys.platform.startswith("freebsd")
# mqd_t is an int in glibc, a pointer (struct __mq *) in FreeBSD <mqueue.h>.
MQD = ctypes.c_void_p if FREEBSD else ctypes.c_int
_MQ_FAILED = (ctypes.c_void_p(-1).value, None) if FREEBSD else (-1,)
# Names longer than any platform's PATH_MAX (Linux 4096, FreeBSD 1024) must have failed.
NAME_CEILING = 8192
FULL_ATTR = (2, 16)          # maxmsg, msgsize of the small queues the probes fill
FUNCTIONS = ("mq_open", "mq_close", "mq_unlink", "mq_send", "mq_receive", "mq_getattr")


class MqAttr(ctypes.Structure):
    """struct mq_attr: four longs then reserved room, in glibc and FreeBSD alike."""
    _fields_ = [("mq_flags", ctypes.c_long), ("mq_maxmsg", ctypes.c_long),
                ("mq_msgsize", ctypes.c_long), ("mq_curmsgs", ctypes.c_long),
                ("reserved", ctypes.c_long * 4)]


class Sigevent(ctypes.Structure):
    """struct sigevent: glibc puts sigev_value first, FreeBSD sigev_notify first."""
    if FREEBSD:
        _fields_ = [("sigev_notify", ctypes.c_int), ("sigev_signo", ctypes.c_int),
                    ("sigev_value", ctypes.c_void_p), ("pad", ctypes.c_byte * 96)]
    else:
        _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                    ("sigev_notify", ctypes.c_int), ("pad", ctypes.c_byte * 96)]


# SIGEV_SIGNAL is 0 in glibc <bits/sigevent-consts.h>, 1 in FreeBSD <sys/signal.h>.
SIGEV_SIGNAL = 1 if FREEBSD else 0


def _check(result):
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def _fn(name, restype, argtypes):
    return _libc.function(name, restype, argtypes)


# --- the C calls -------------------------------------------------------------------------

def mq_open(name, flags, attr=None, mode=0o600):
    """mq_open(name, flags, mode, attr): the queue descriptor.  Records the name first."""
    if flags & os.O_CREAT:
        _sysv.record("mq", name)
    # Variadic (mqd_t mq_open(const char *, int, ...)): mode and attr go as extra arguments.
    fn = _fn("mq_open", MQD, [ctypes.c_char_p, ctypes.c_int])
    queue = fn(os.fsencode(name), flags, ctypes.c_uint(mode),
               ctypes.byref(attr) if attr is not None else ctypes.c_void_p(None))
    if queue in _MQ_FAILED:
        _check(-1)
    return queue


def mq_close(queue):
    _check(_fn("mq_close", ctypes.c_int, [MQD])(queue))


def mq_unlink(name):
    _check(_fn("mq_unlink", ctypes.c_int, [ctypes.c_char_p])(os.fsencode(name)))


def mq_getattr(queue):
    attr = MqAttr()
    _check(_fn("mq_getattr", ctypes.c_int, [MQD, ctypes.POINTER(MqAttr)])(queue, ctypes.byref(attr)))
    return attr


def mq_send(queue, data, priority=0):
    fn = _fn("mq_send", ctypes.c_int, [MQD, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint])
    _check(fn(queue, data, len(data), priority))


def mq_receive(queue, size):
    """(data, priority) of the next message, into a buffer of ``size`` bytes."""
    fn = _fn("mq_receive", ctypes.c_ssize_t,
             [MQD, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint)])
    buffer, priority = ctypes.create_string_buffer(size), ctypes.c_uint()
    length = _check(fn(queue, buffer, size, ctypes.byref(priority)))
    return buffer.raw[:length], priority.value


def _deadline(seconds):
    """An absolute CLOCK_REALTIME timespec ``seconds`` from now (what mq_timed* take)."""
    at = time.clock_gettime_ns(time.CLOCK_REALTIME) + int(seconds * 1e9)
    return _libc.Timespec(at // 1_000_000_000, at % 1_000_000_000)


def mq_timedsend(queue, data, seconds, priority=0):
    fn = _fn("mq_timedsend", ctypes.c_int, [MQD, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.c_uint, ctypes.POINTER(_libc.Timespec)])
    _check(fn(queue, data, len(data), priority, ctypes.byref(_deadline(seconds))))


def mq_timedreceive(queue, size, seconds):
    fn = _fn("mq_timedreceive", ctypes.c_ssize_t,
             [MQD, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint),
              ctypes.POINTER(_libc.Timespec)])
    buffer, priority = ctypes.create_string_buffer(size), ctypes.c_uint()
    length = _check(fn(queue, buffer, size, ctypes.byref(priority),
                       ctypes.byref(_deadline(seconds))))
    return buffer.raw[:length], priority.value


def mq_notify_signal(queue, signo):
    event = Sigevent()
    event.sigev_notify, event.sigev_signo = SIGEV_SIGNAL, signo
    _check(_fn("mq_notify", ctypes.c_int, [MQD, ctypes.POINTER(Sigevent)])(
        queue, ctypes.byref(event)))


# --- one queue, always unlinked --------------------------------------------------------------

@contextlib.contextmanager
def new_queue(attr=None, flags=os.O_RDWR, stem="q"):
    """A fresh queue under a unique name; closed and unlinked on the way out."""
    name = harness.unique_name(stem)
    try:
        queue = mq_open(name, flags | os.O_CREAT | os.O_EXCL, attr)
        try:
            yield queue
        finally:
            mq_close(queue)
    finally:
        with contextlib.suppress(OSError):
            mq_unlink(name)


def small_attr():
    maxmsg, msgsize = FULL_ATTR
    return MqAttr(mq_maxmsg=maxmsg, mq_msgsize=msgsize)


def missing(*extra):
    """``"unsupported"`` (with the missing function) where the C library lacks mq_*, or
    the errno where mq_open itself fails (FreeBSD without mqueuefs: ENOSYS)."""
    for name in FUNCTIONS + extra:
        if not _libc.available(name):
            return Measured(UNSUPPORTED, missing=name)
    if support() != OK:
        return Measured(UNSUPPORTED, mq_open=support())
    return None


@experiment
def support():
    """One queue opened, a message sent and received: "ok" or the first errno."""
    try:
        with new_queue(small_attr()) as queue:
            mq_send(queue, b"hello", 1)
            data, _ = mq_receive(queue, FULL_ATTR[1])
    except OSError as exc:
        return errno_name(exc)
    if data != b"hello":
        raise harness.Unmeasurable(f"mq_receive returned {data!r}, not b'hello'")
    return OK


@observation("mq.posix.supported")
def supported():
    """mq_open, mq_send and mq_receive work for this process ("ok", the errno, "unsupported")."""
    for name in FUNCTIONS:
        if not _libc.available(name):
            return Measured(UNSUPPORTED, missing=name)
    return support()


@observation("mq.posix.default_attr")
def default_attr():
    """A queue opened without attributes has [mq_maxmsg, mq_msgsize] (Linux: fs.mqueue defaults)."""
    if unsupported := missing():
        return unsupported
    with new_queue() as queue:
        attr = mq_getattr(queue)
    return [attr.mq_maxmsg, attr.mq_msgsize]


@observation("mq.posix.priority_order")
def priority_order():
    """Messages are received highest priority first, and in sending order within one priority."""
    if unsupported := missing():
        return unsupported
    sent = [(b"a", 1), (b"b", 5), (b"c", 1), (b"d", 5)]
    attr = MqAttr(mq_maxmsg=len(sent), mq_msgsize=FULL_ATTR[1])
    with new_queue(attr, os.O_RDWR | os.O_NONBLOCK) as queue:
        for data, priority in sent:
            mq_send(queue, data, priority)
        received = [mq_receive(queue, FULL_ATTR[1]) for _ in sent]
    order = [f"{data.decode()}/{priority}" for data, priority in received]
    return Measured(order == ["b/5", "d/5", "a/1", "c/1"], received=order)


def fill(queue):
    for number in range(FULL_ATTR[0]):
        mq_send(queue, b"%d" % number)


@observation("mq.posix.full.blocking_send")
def full_blocking_send():
    """mq_timedsend to a full queue waits out its deadline ("blocks": ETIMEDOUT after the window)."""
    if unsupported := missing("mq_timedsend"):
        return unsupported
    window = harness.block_window()
    with new_queue(small_attr()) as queue:
        fill(queue)
        started = time.monotonic()
        try:
            mq_timedsend(queue, b"x", window)
        except OSError as exc:
            waited = time.monotonic() - started
            timed_out = exc.errno == errno.ETIMEDOUT and waited >= window * 0.8
            answer = BLOCKS if timed_out else errno_name(exc)
        else:
            waited, answer = time.monotonic() - started, OK
    return Measured(answer, waited_ms=round(waited * 1000, 1), window_ms=round(window * 1000, 1))


@observation("mq.posix.full.nonblocking_send")
def full_nonblocking_send():
    """mq_send to a full queue opened O_NONBLOCK fails at once: EAGAIN."""
    if unsupported := missing():
        return unsupported
    with new_queue(small_attr(), os.O_RDWR | os.O_NONBLOCK) as queue:
        fill(queue)
        return harness.outcome(mq_send, queue, b"x")


@observation("mq.posix.receive_too_small")
def receive_too_small():
    """mq_receive into a buffer smaller than mq_msgsize fails: EMSGSIZE (even for a short message)."""
    if unsupported := missing("mq_timedreceive"):
        return unsupported
    with new_queue(small_attr(), os.O_RDWR | os.O_NONBLOCK) as queue:
        mq_send(queue, b"x")
        return Measured(harness.outcome(mq_timedreceive, queue, FULL_ATTR[1] - 1,
                                        harness.block_window()),
                        buffer=FULL_ATTR[1] - 1, mq_msgsize=FULL_ATTR[1], message=1)


# --- names ---------------------------------------------------------------------------------------

def padded(base, length):
    return base + "x" * (length - len(base))


def try_name(name):
    """mq_open(name, O_CREAT|O_EXCL) then close and unlink: "ok" or the errno."""
    try:
        with _named_queue(name):
            pass
    except OSError as exc:
        return errno_name(exc)
    return OK


@contextlib.contextmanager
def _named_queue(name):
    try:
        queue = mq_open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, small_attr())
        mq_close(queue)
        yield
    finally:
        with contextlib.suppress(OSError):
            mq_unlink(name)


@experiment
def name_limit():
    base = harness.unique_name("n")
    longest, past, tries = harness.largest_accepted(
        lambda length: try_name(padded(base, length)), len(base), NAME_CEILING)
    return {"longest": longest, "past": past, "tries": tries}


@observation("mq.posix.name_max")
def name_max():
    """mq_open accepts names up to this many characters, counting the leading "/"."""
    if unsupported := missing():
        return unsupported
    found = name_limit()
    return Measured(found["longest"], tries=found["tries"])


@observation("mq.posix.too_long")
def too_long():
    """mq_open of a name one character longer than the longest accepted fails with this errno."""
    if unsupported := missing():
        return unsupported
    return name_limit()["past"]


# --- notification --------------------------------------------------------------------------------

@observation("mq.posix.notify")
def notify():
    """mq_notify(SIGEV_SIGNAL) delivers the signal when a message reaches the empty queue ("ok")."""
    if unsupported := missing("mq_notify"):
        return unsupported
    signo = signal.SIGUSR1
    # Blocked, so the signal waits for sigtimedwait instead of running a handler.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
    try:
        with new_queue(small_attr(), os.O_RDWR | os.O_NONBLOCK) as queue:
            mq_notify_signal(queue, signo)
            mq_send(queue, b"x")
            # Arrives at once where notification works; the bound only ends a wait that failed.
            info = signal.sigtimedwait({signo}, harness.block_window() * 10)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if info is None:
        return BLOCKS
    return Measured(OK, si_code=info.si_code, si_pid_is_sender=info.si_pid == os.getpid())


if __name__ == "__main__":
    _sysv.ignore_sigsys()
    harness.main()
