"""Shared memory between processes: anonymous mappings across fork, files, POSIX shm names,
and what a shm_open fd allows (O_CLOEXEC and O_TRUNC in its flags, read/write/lseek).

    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (fork() == 0) { strcpy(p, "child"); _exit(0); }     /* the parent sees "child" */

    int fd = shm_open("/name", O_CREAT | O_EXCL | O_RDWR, 0600);
    ftruncate(fd, len);  ...  shm_unlink("/name");

Python has no shm_open; probes._libc calls it through ctypes.  Every object is
created under a name unique to this run and unlinked before the observation ends,
whatever happens.
"""
import contextlib
import fcntl
import mmap
import os
import resource
import subprocess
import sys

from . import _libc, harness
from .harness import Measured, errno_name, experiment, observation

PAGE = resource.getpagesize()
MAP_ANONYMOUS = getattr(mmap, "MAP_ANONYMOUS", None) or getattr(mmap, "MAP_ANON")
CHILD_TIMEOUT = harness.scaled(5.0)
# Names longer than any platform's PATH_MAX (Linux 4096, FreeBSD 1024) must have failed.
NAME_CEILING = 8192


# --- anonymous mappings across fork ------------------------------------------------------------

def child_writes(mapping):
    mapping[:5] = b"child"
    return mapping[:5].decode()


def seen_by_parent(flags):
    """Map one page with ``flags``, let a forked child write "child"; what the parent sees."""
    mapping = mmap.mmap(-1, PAGE, flags=flags | MAP_ANONYMOUS)
    with mapping:
        child = harness.in_child(child_writes, mapping, timeout=CHILD_TIMEOUT)
        if child.value != "child":
            raise harness.Unmeasurable(f"the child could not write its own mapping: {child.error}")
        return Measured(mapping[:5] == b"child", parent_saw=repr(mapping[:5]))


@observation("shm.anon_shared_across_fork")
def anon_shared_across_fork():
    """A child's write to MAP_SHARED|MAP_ANONYMOUS memory is seen by its parent."""
    return seen_by_parent(mmap.MAP_SHARED)


@observation("shm.anon_private_across_fork")
def anon_private_across_fork():
    """A child's write to MAP_PRIVATE|MAP_ANONYMOUS memory is not seen by its parent."""
    return seen_by_parent(mmap.MAP_PRIVATE)


# --- a file mapped by two unrelated processes -------------------------------------------------------

# A fresh interpreter, not a fork: it shares nothing with us but the file's name.
UNRELATED_PROCESS = """
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED)
    sys.stdout.write(m[:16].rstrip(b"\\0").decode())
    m[64:80] = b"written-by-child"
    m.close()
"""


@observation("shm.file_shared_unrelated")
def file_shared_unrelated():
    """Two unrelated processes mapping one file MAP_SHARED see each other's writes."""
    path = os.path.abspath("m")
    try:
        with open(path, "w+b") as f:
            f.truncate(PAGE)
            with mmap.mmap(f.fileno(), PAGE, flags=mmap.MAP_SHARED) as mapping:
                mapping[:16] = b"written-by-paren"
                done = subprocess.run([sys.executable, "-I", "-S", "-c", UNRELATED_PROCESS, path],
                                      capture_output=True, text=True, timeout=CHILD_TIMEOUT)
                if done.returncode != 0:
                    raise harness.Unmeasurable(f"the other process failed: {done.stderr[-300:]}")
                child_saw = done.stdout
                parent_saw = mapping[64:80].decode("latin-1")
    finally:
        os.unlink(path)
    return Measured(child_saw == "written-by-paren" and parent_saw == "written-by-child",
                    other_process_saw=child_saw, this_process_saw=parent_saw)


# --- POSIX shm names ---------------------------------------------------------------------------------

def padded(base, length):
    """``base`` lengthened with "x" to exactly ``length`` characters."""
    return base + "x" * (length - len(base))


def try_shm_name(names, name):
    """shm_open(name, O_CREAT|O_EXCL|O_RDWR) then close and shm_unlink: "ok" or errno."""
    names.add(name)
    try:
        fd = _libc.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    except OSError as exc:
        return errno_name(exc)
    finally:
        names.release()  # after success and failure alike: nothing waits for a later cleanup
    os.close(fd)
    return harness.OK


@experiment
def shm_name_limit():
    """The longest accepted shm name (counting its leading "/"), and the error one past it."""
    base = harness.unique_name("s")
    with _libc.Names(_libc.shm_unlink) as names:
        longest, past, tries = harness.largest_accepted(
            lambda length: try_shm_name(names, padded(base, length)), len(base), NAME_CEILING)
    return {"longest": longest, "past": past, "tries": tries}


def shm_names_supported():
    return _libc.available("shm_open") and _libc.available("shm_unlink")


@observation("shm.posix.name_max")
def posix_name_max():
    """shm_open accepts names up to this many characters, counting the leading "/"."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    found = shm_name_limit()
    return Measured(found["longest"], tries=found["tries"])


@observation("shm.posix.too_long")
def posix_too_long():
    """shm_open of a name one character longer than the longest accepted fails with this errno."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    return shm_name_limit()["past"]


@contextlib.contextmanager
def shm_object(name):
    """A new POSIX shm object's fd; closed and unlinked afterwards."""
    with _libc.Names(_libc.shm_unlink) as names:
        names.add(name)
        fd = _libc.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        try:
            yield fd
        finally:
            os.close(fd)


@observation("shm.posix.resize_again")
def posix_resize_again():
    """ftruncate of a shm object that already has a size works ("ok"; macOS: EINVAL)."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    with shm_object(harness.unique_name("r")) as fd:
        os.ftruncate(fd, PAGE)
        second = harness.outcome(os.ftruncate, fd, 2 * PAGE)
        return Measured(second, first_size=PAGE, second_size=2 * PAGE,
                        size_now=os.fstat(fd).st_size)


@observation("shm.posix.oflag_cloexec")
def posix_oflag_cloexec():
    """shm_open accepts O_CLOEXEC in its flags and the fd gets FD_CLOEXEC (macOS 26.4: EINVAL)."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    cloexec = getattr(os, "O_CLOEXEC", None)
    if cloexec is None:
        return Measured(harness.UNSUPPORTED, missing="os.O_CLOEXEC")
    with _libc.Names(_libc.shm_unlink) as names:
        name = names.add(harness.unique_name("c"))
        try:
            fd = _libc.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR | cloexec)
        except OSError as exc:
            # Without the flag the same call works: the refusal is about O_CLOEXEC alone.
            return Measured(errno_name(exc), without_o_cloexec=try_shm_name(names, name))
        try:
            fd_cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        finally:
            os.close(fd)
    return Measured(harness.OK, fd_cloexec=fd_cloexec)


def read_back(fd, data):
    """write ``data``, lseek to 0, read it back: the first step that fails, or what was read."""
    for step, call in (("write", lambda: os.write(fd, data)),
                       ("lseek", lambda: os.lseek(fd, 0, os.SEEK_SET))):
        try:
            call()
        except OSError as exc:
            return step, errno_name(exc)
    try:
        return "read", os.read(fd, len(data))
    except OSError as exc:
        return "read", errno_name(exc)


@observation("shm.posix.read_write")
def posix_read_write():
    """write, lseek and read work on a shm_open fd as on a file ("ok"; macOS: ENXIO)."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    with shm_object(harness.unique_name("w")) as fd:
        os.ftruncate(fd, PAGE)  # macOS maps a shm object only once it has a size
        step, result = read_back(fd, b"ipcmatrix")
        if isinstance(result, str):  # an errno name
            return Measured(result, failed_at=step)
        with mmap.mmap(fd, PAGE, flags=mmap.MAP_SHARED) as mapping:
            mapped = bytes(mapping[:9])
    same = result == b"ipcmatrix" and mapped == b"ipcmatrix"
    return Measured(harness.OK if same else "mismatch", read=result.decode("latin-1"),
                    seen_in_mapping=mapped.decode("latin-1"))


@observation("shm.posix.o_trunc")
def posix_o_trunc():
    """shm_open(O_RDWR|O_TRUNC) of an object that has a size empties it ("ok"; macOS: EINVAL)."""
    if not shm_names_supported():
        return harness.UNSUPPORTED
    name = harness.unique_name("t")
    with shm_object(name) as fd:
        os.ftruncate(fd, PAGE)
        try:
            again = _libc.shm_open(name, os.O_RDWR | os.O_TRUNC)
        except OSError as exc:
            return Measured(errno_name(exc), size_before=PAGE)
        try:
            size_after = os.fstat(again).st_size
        finally:
            os.close(again)
    return Measured(harness.OK if size_after == 0 else "size-kept", size_before=PAGE,
                    size_after=size_after)


if __name__ == "__main__":
    harness.main()
