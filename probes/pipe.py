"""Pipes: one direction or two, PIPE_BUF, capacity, no reader, atomic records, a wake-up token.

    int fd[2];
    pipe(fd);               /* fd[0] for reading, fd[1] for writing */
    pipe2(fd, O_CLOEXEC | O_NONBLOCK);      /* both flags at once, where it exists */

The course notes call the unnamed pipe half duplex and "great for synchro"; each
observation below checks one of those claims, or one limit a program relies on.
"""
import contextlib
import fcntl
import os
import resource
import select
import time

from . import _fds, harness
from .harness import Measured, errno_name, observation, outcome

# A writer that outlives the parent's interest is killed; this bounds any one experiment.
CHILD_TIMEOUT = harness.scaled(5.0)


class Pipe:
    """pipe(fd) as a context manager: each end closed once, early or on leaving the block."""

    def __init__(self):
        self.read_end, self.write_end = os.pipe()
        self._open = {self.read_end, self.write_end}

    def close(self, fd):
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for fd in list(self._open):
            self.close(fd)


def pipe_buf(fd):
    """fpathconf(fd, _PC_PIPE_BUF): the largest write the system promises is atomic."""
    return os.fpathconf(fd, "PC_PIPE_BUF")


def fill_nonblocking(fd, chunk):
    """Write into non-blocking ``fd`` until EAGAIN: (bytes taken, writes made).

    What is measured is how many bytes 1-byte writes get into an empty pipe.  Writing
    ``chunk`` = PIPE_BUF bytes at a time first is a shortcut to the same count, 16
    writes instead of 65536: PIPE_BUF is a power of two no larger than a page, so from
    an empty pipe each chunk is atomic (all or EAGAIN, never short) and fills pages and
    buffers exactly as that many 1-byte writes would; when a chunk no longer fits,
    1-byte writes take whatever room is left.  It holds only from empty: on Linux a
    chunk never merges into a page that already holds a few bytes, where 1-byte writes
    would.  tests/test_pipe_paths.py checks the shortcut against 1-byte writes.
    """
    taken = writes = 0
    for size in (chunk, 1):
        block = b"x" * size
        while True:
            try:
                written = os.write(fd, block)
            except BlockingIOError:
                break
            taken += written
            writes += 1
            if written < size:  # a short write: the room is gone for this size
                break
            if taken > 1 << 30:
                raise harness.Unmeasurable("a non-blocking writer never got EAGAIN after 1 GiB")
    return taken, writes


# --- direction and limits ------------------------------------------------------------------

@observation("pipe.write_to_read_end")
def write_to_read_end():
    """Writing to fd[0], the read end, fails with EBADF: a pipe is half duplex."""
    with Pipe() as fd:
        os.set_blocking(fd.read_end, False)  # where it is writable, never wait for room
        return outcome(os.write, fd.read_end, b"x")


@observation("pipe.pipe_buf")
def pipe_buf_value():
    """fpathconf(fd, _PC_PIPE_BUF): writes up to this many bytes are atomic."""
    with Pipe() as fd:
        # select.PIPE_BUF is Python's compile-time copy of the constant, shown for comparison.
        return Measured(pipe_buf(fd.write_end), select_PIPE_BUF=getattr(select, "PIPE_BUF", None))


@observation("pipe.capacity")
def capacity():
    """A pipe nobody reads takes this many bytes of 1-byte non-blocking writes before EAGAIN."""
    with Pipe() as fd:
        os.set_blocking(fd.write_end, False)
        chunk = pipe_buf(fd.write_end)
        taken, writes = fill_nonblocking(fd.write_end, chunk)
        return Measured(taken, writes=writes, chunk=chunk, page_size=resource.getpagesize())


@observation("pipe.resize")
def resize():
    """fcntl(F_SETPIPE_SZ) changes a pipe's size ("ok"), where the call exists (Linux)."""
    set_size = harness.constant("F_SETPIPE_SZ", fcntl)
    if set_size is None:
        return Measured(harness.UNSUPPORTED, reason="no F_SETPIPE_SZ on this platform")
    get_size = harness.constant("F_GETPIPE_SZ", fcntl)
    with Pipe() as fd:
        write_end = fd.write_end
        before = fcntl.fcntl(write_end, get_size) if get_size is not None else None
        # Two pages: a shrink that no pipe-max-size or per-user page limit can refuse.
        requested = 2 * resource.getpagesize()
        try:
            granted = fcntl.fcntl(write_end, set_size, requested)
        except OSError as exc:
            return Measured(errno_name(exc), requested=requested, before=before)
        after = fcntl.fcntl(write_end, get_size) if get_size is not None else granted
        value = harness.OK if granted >= requested and after == granted else "ignored"
        return Measured(value, before=before, requested=requested, granted=granted, after=after)


@observation("pipe.pipe2")
def pipe2():
    """pipe2(O_CLOEXEC | O_NONBLOCK) gives both ends both flags at once.

    ``"unsupported"`` where there is no pipe2 (macOS); ``"ignored:<flag>"`` where a flag
    did not take.  os.pipe2 is the C call itself (os.pipe sets FD_CLOEXEC on its own).
    """
    make = harness.constant("pipe2", os)
    if make is None:
        return Measured(harness.UNSUPPORTED, reason="no pipe2 in this Python's os module")
    try:
        ends = make(os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return errno_name(exc)
    try:
        flags = [_fds.fd_flags(fd) for fd in ends]
        control = make(0)
        try:
            plain = [_fds.fd_flags(fd) for fd in control]
        finally:
            _fds.close_all(control)
    finally:
        _fds.close_all(ends)
    missing = sorted({name for end in flags for name, on in end.items() if not on})
    return Measured(harness.OK if not missing else "ignored:" + "+".join(missing),
                    ends=flags, control_no_flags=plain)


# --- no reader --------------------------------------------------------------------------------

@observation("pipe.no_reader.write")
def no_reader_write():
    """A write to a pipe whose read end is closed fails with EPIPE (SIGPIPE ignored here)."""
    with Pipe() as fd:
        fd.close(fd.read_end)
        return outcome(os.write, fd.write_end, b"x")


def write_without_reader():
    """The child's part: close the read end, write; return what the write did, if alive."""
    with Pipe() as fd:
        fd.close(fd.read_end)
        return outcome(os.write, fd.write_end, b"x")


@observation("pipe.no_reader.sigpipe_kills")
def no_reader_sigpipe_kills():
    """A process with SIGPIPE at its default action dies of SIGPIPE writing with no reader."""
    result = harness.in_child(write_without_reader, sigpipe_default=True, timeout=CHILD_TIMEOUT)
    return Measured(result.signal_name == "SIGPIPE", signal=result.signal_name,
                    write=result.value, exit_code=result.exit_code)


# --- atomic records from concurrent writers ----------------------------------------------------

WRITERS = 4
BYTES_PER_WRITER = 128 * 1024  # twice a 64 KiB pipe: writers block and wake many times


def write_records(read_end, write_end, tag, size, count):
    """One writer: ``count`` blocking writes of ``size`` bytes, every byte ``tag``."""
    os.close(read_end)
    record = bytes([tag]) * size
    short = 0
    for _ in range(count):
        if os.write(write_end, record) != size:
            short += 1
    return short


def records_intact(data, size, writers, count):
    """True when ``data`` is whole ``size``-byte records of one tag each, ``count`` per writer."""
    if len(data) != size * writers * count:
        return False
    per_tag = {}
    for start in range(0, len(data), size):
        record = data[start:start + size]
        if record.count(record[:1]) != size:
            return False
        per_tag[record[0]] = per_tag.get(record[0], 0) + 1
    return sorted(per_tag.values()) == [count] * writers


def read_until_eof(fd, deadline):
    """Everything readable from ``fd`` until EOF; Unmeasurable if ``deadline`` passes first."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise harness.Unmeasurable("the writers did not finish in time")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@observation("pipe.atomic_up_to_pipe_buf")
def atomic_up_to_pipe_buf():
    """Concurrent writers of PIPE_BUF-byte records never interleave inside a record."""
    with Pipe() as fd, contextlib.ExitStack() as children:
        size = pipe_buf(fd.write_end)
        count = max(1, BYTES_PER_WRITER // size)
        writers = [children.enter_context(harness.Child(
                       write_records, fd.read_end, fd.write_end, ord("A") + i, size, count))
                   for i in range(WRITERS)]
        fd.close(fd.write_end)  # EOF once every writer is done
        data = read_until_eof(fd.read_end, time.monotonic() + CHILD_TIMEOUT)
        results = [writer.wait(CHILD_TIMEOUT) for writer in writers]
        short = sum(r.value or 0 for r in results if r is not None)
        return Measured(records_intact(data, size, WRITERS, count) and short == 0,
                        writers=WRITERS, records_each=count, record_size=size,
                        bytes=len(data), short_writes=short)


# --- a pipe as a wake-up token ------------------------------------------------------------------

def wait_for_token(read_end, write_end):
    """The waiting side: a blocking read of one byte."""
    os.close(write_end)
    return os.read(read_end, 1).decode()


@observation("sync.pipe_token")
def pipe_token():
    """A process blocked reading an empty pipe wakes when another process writes one byte."""
    window = harness.block_window()
    with Pipe() as fd, harness.Child(wait_for_token, fd.read_end, fd.write_end) as waiter:
        early = waiter.wait_blocked()   # a window from the read on, never from the fork
        if early is not harness.BLOCKS:  # the read did not wait for the token
            return Measured(False, returned_before_token=early.value or early.error)
        sent = time.monotonic()
        os.write(fd.write_end, b"!")
        woke = waiter.wait(CHILD_TIMEOUT)
        if woke is None:
            raise harness.Unmeasurable(f"the waiter did not wake within {CHILD_TIMEOUT:g} s")
        return Measured(woke.value == "!", waited_s=window, token=woke.value,
                        wake_ms=round((time.monotonic() - sent) * 1000, 1))


if __name__ == "__main__":
    harness.main()
