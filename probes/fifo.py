"""FIFOs (named pipes): what mkfifo makes, how open waits for the other end, and capacity.

    mkfifo("f", 0600);
    int rd = open("f", O_RDONLY);          /* waits until a writer opens */
    int wr = open("f", O_WRONLY | O_NONBLOCK);   /* ENXIO while nobody reads */

Every open that can wait runs in a forked child that is killed at its deadline, so a
probe never hangs in open(2).  The FIFO is created in the observation's scratch
directory and removed afterwards.
"""
import contextlib
import os
import stat
import time

from . import harness
from .harness import Measured, errno_name, observation
from .pipe import fill_nonblocking, pipe_buf

NAME = "f"
CHILD_TIMEOUT = harness.scaled(5.0)

FILE_TYPES = [(stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISREG, "regular"),
              (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character-device"),
              (stat.S_ISBLK, "block-device"), (stat.S_ISLNK, "symlink")]


def file_type(mode):
    """The kind of file a st_mode names: "fifo", "socket", "regular", ..."""
    return next((name for test, name in FILE_TYPES if test(mode)), "unknown")


@contextlib.contextmanager
def fifo(name=NAME):
    """mkfifo(name, 0600); unlinked afterwards."""
    os.mkfifo(name, 0o600)
    try:
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def try_open(path, flags):
    """open(2) then close at once: "ok" or the errno name."""
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return errno_name(exc)
    os.close(fd)
    return harness.OK


@contextlib.contextmanager
def opening(path, flags):
    """open(2) in a forked child: yields ("blocks" or what open did, the child).

    A child still waiting is left running inside the block, so the caller can release
    it; it is killed and reaped when the block ends.
    """
    with harness.Child(try_open, path, flags) as child:
        result = child.wait_blocked()  # the window starts once the child is in open(2)
        if result == harness.BLOCKS:
            yield harness.BLOCKS, child
        else:
            yield (result.value if result.error is None else result.error), child


@observation("fifo.file_type")
def fifo_file_type():
    """mkfifo makes a file that stat reports as a FIFO (S_IFIFO)."""
    with fifo() as path:
        return file_type(os.stat(path).st_mode)


def release(path, child):
    """Open a writer: a reader waiting for one must now finish its open (detail only)."""
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:  # the waiting reader is not counted as a reader here
        return {"released_by_writer": False, "writer_open": errno_name(exc)}
    try:
        started = time.monotonic()
        released = child.wait(CHILD_TIMEOUT)
    finally:
        os.close(writer)
    return {"released_by_writer": released is not None and released.value == harness.OK,
            "release_ms": round((time.monotonic() - started) * 1000, 1)}


@observation("fifo.open_read_without_writer")
def open_read_without_writer():
    """open(O_RDONLY) of a FIFO nobody writes waits ("blocks") until a writer opens it."""
    with fifo() as path:
        with opening(path, os.O_RDONLY) as (value, child):
            if value != harness.BLOCKS:
                return value
            return Measured(value, window_s=harness.block_window(), **release(path, child))


@observation("fifo.open_write_nonblock_without_reader")
def open_write_nonblock_without_reader():
    """open(O_WRONLY|O_NONBLOCK) of a FIFO nobody reads fails with ENXIO."""
    with fifo() as path:
        return try_open(path, os.O_WRONLY | os.O_NONBLOCK)


@observation("fifo.open_rdwr")
def open_rdwr():
    """open(O_RDWR) of a FIFO with no other end returns at once (POSIX leaves it undefined)."""
    with fifo() as path:
        with opening(path, os.O_RDWR) as (value, _):
            return value


@observation("fifo.capacity")
def capacity():
    """A FIFO nobody reads takes this many bytes of 1-byte non-blocking writes before EAGAIN."""
    with fifo() as path:
        # A non-blocking reader opens at once; with it there, so does a non-blocking writer.
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                chunk = pipe_buf(writer)
                taken, writes = fill_nonblocking(writer, chunk)
            finally:
                os.close(writer)
        finally:
            os.close(reader)
        return Measured(taken, writes=writes, chunk=chunk)


if __name__ == "__main__":
    harness.main()
