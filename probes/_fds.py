"""File-descriptor accounting and SCM_RIGHTS plumbing shared by the fdpass probe.

"How many fds did the receiver gain?" is answered by listing the process's open fds
before and after, never by trusting the control data: on macOS the fds that did not fit
are installed but not named (macos-facts B24), so only a count of the table finds them.

Where the list comes from is chosen at call time:
- ``/proc/self/fd`` (Linux), else ``/dev/fd`` (macOS's fdesc, FreeBSD's fdescfs);
- a directory is trusted only if it lists the fd we opened to read it: FreeBSD's devfs
  ``/dev/fd`` without fdescfs shows only 0, 1 and 2;
- otherwise every number is asked with ``fcntl(F_GETFD)``.
``IPCMATRIX_FD_SOURCE`` (a directory, or ``scan``) forces one, so tests can run the
macOS/FreeBSD ways here too (Linux has ``/dev/fd`` as well).
"""
from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import socket
import warnings

from . import _libc

ENV_FD_SOURCE = "IPCMATRIX_FD_SOURCE"
SCAN = "scan"
DIRECTORIES = ("/proc/self/fd", "/dev/fd")
# fds are handed out lowest-first (B22), so a run this long of closed numbers past the
# highest open one means there is nothing further up that we could have been given.
SCAN_GAP = 1024

INT = array.array("i").itemsize   # sizeof(int): what one fd takes in SCM_RIGHTS data


# --- which fds are open ----------------------------------------------------------------

class IncompleteListing(Exception):
    """A directory of fds that does not list every open fd (FreeBSD /dev/fd without fdescfs)."""


def is_open(fd):
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return False
        raise
    return True


def fd_source():
    """Where open fds are listed from here: a directory, or ``"scan"``."""
    forced = os.environ.get(ENV_FD_SOURCE)
    if forced:
        return forced
    return next((path for path in DIRECTORIES if os.path.isdir(path)), SCAN)


def listed_fds(directory):
    """The open fds a directory such as /proc/self/fd lists, checked against fcntl.

    Reading the directory needs an fd of its own; it must appear in the listing (else the
    listing is incomplete) and, closed again, must not appear in the answer.
    """
    reader = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(reader)
    finally:
        os.close(reader)
    listed = {int(name) for name in names if name.isdigit()}
    if reader not in listed:
        raise IncompleteListing(f"{directory} did not list the fd ({reader}) reading it")
    return {fd for fd in listed if is_open(fd)}


def scanned_fds(limit=None):
    """The open fds found by asking fcntl about each number from 0 upward."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = (1 << 20) if limit == resource.RLIM_INFINITY else limit
    found, fd, last_open = set(), 0, -1
    while fd < limit and fd - last_open <= SCAN_GAP:
        if is_open(fd):
            found.add(fd)
            last_open = fd
        fd += 1
    return found


def open_fds(source=None):
    """The set of fds open in this process right now."""
    source = source or fd_source()
    if source != SCAN:
        try:
            return listed_fds(source)
        except (OSError, IncompleteListing):
            pass
    return scanned_fds()


def lowest_free():
    """The fd number the next open/dup/recvmsg would be given."""
    fd = 0
    while is_open(fd):
        fd += 1
    return fd


def close_all(fds):
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Sweep:
    """What one sweep found left open and closed (fds nobody was going to close)."""

    def __init__(self):
        self.closed = []


SWEPT = []   # every fd any sweep in this process had to close, for the probe's own report


@contextlib.contextmanager
def sweep():
    """Close, on the way out, every fd opened inside the block that is still open.

    Put it outermost, so that the sockets made inside are closed by their own ``with``
    first and only fds nobody owns (received but not named, say) remain to be swept.
    """
    before = open_fds()
    found = Sweep()
    try:
        yield found
    finally:
        found.closed = sorted(open_fds() - before)
        close_all(found.closed)
        SWEPT.extend(found.closed)


# --- SCM_RIGHTS -------------------------------------------------------------------------

def room_for(count):
    """A control buffer size that holds exactly ``count`` fds and not one more.

    CMSG_LEN, not CMSG_SPACE: on LP64 Linux CMSG_SPACE(sizeof(int)) is 24 bytes and holds
    two fds (8-byte alignment); macOS aligns to 4.  Sizes always come from the socket
    module, never from numbers written for one platform.
    """
    return socket.CMSG_LEN(count * INT)


def space_for(count):
    """A control buffer with room for ``count`` fds (CMSG_SPACE: it may hold a few more)."""
    return socket.CMSG_SPACE(count * INT)


def rights(fds):
    """One SCM_RIGHTS control message carrying ``fds`` (macOS accepts only one per sendmsg)."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


def send_fds(sock, fds, data=b"x", flags=0):
    """sendmsg(data + fds); returns the bytes sent (raises OSError like the C call fails)."""
    return sock.sendmsg([data] if data else [], rights(fds), flags)


def fds_named(ancdata):
    """The fds the control data names, reading only whole ints of what was copied out.

    CPython already cuts each item at msg_controllen (macOS leaves the untruncated
    cmsg_len in the header), so a truncated item may end mid-int: that part is not an fd.
    """
    named = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(data) - len(data) % INT
            named.extend(array.array("i", data[:whole]))
    return named


class Received:
    """What one recvmsg delivered: data, the fds it named, the fds the process gained."""

    def __init__(self, data, named, flags, gained):
        self.data = data
        self.named = named
        self.flags = flags
        self.gained = gained

    @property
    def ctrunc(self):
        return bool(self.flags & socket.MSG_CTRUNC)

    @property
    def unnamed(self):
        """fds installed in the process that the control data does not name (leaked)."""
        return sorted(set(self.gained) - set(self.named))


def receive(sock, control, bufsize=16, flags=0):
    """recvmsg with a ``control``-byte buffer (0: none), counting the fds gained.

    The caller owns every fd in ``gained`` (named or not) and must close them.
    """
    before = open_fds()
    with warnings.catch_warnings():
        # CPython warns when the control data was cut short; that is the point here.
        warnings.simplefilter("ignore", RuntimeWarning)
        data, ancdata, msg_flags, _ = sock.recvmsg(bufsize, control, flags)
    gained = sorted(open_fds() - before)
    return Received(data, fds_named(ancdata), msg_flags, gained)


@contextlib.contextmanager
def received(sock, control, bufsize=16, flags=0):
    """``receive`` as a context that closes every fd gained, named or not."""
    got = receive(sock, control, bufsize, flags)
    try:
        yield got
    finally:
        close_all(got.gained)


def same_file(a, b):
    """True when two fds refer to the same file (device and inode)."""
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def writer_alive(read_end):
    """True while some fd (anywhere, or in flight) still holds the pipe's write end."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) != b""
    except BlockingIOError:
        return True


@contextlib.contextmanager
def nofile_room(needed):
    """Raise the soft RLIMIT_NOFILE (per process, never beyond the hard limit) so that
    ``needed`` more fds fit; macOS starts Python at 256.  Restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = len(open_fds()) + needed + 16
    if soft != resource.RLIM_INFINITY and soft < want:
        new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- descriptor flags, and the libc calls that set them atomically ----------------------

def fd_flags(fd):
    """``{"cloexec": bool, "nonblock": bool}`` of one descriptor, read with fcntl."""
    return {"cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
            "nonblock": bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)}


def _checked(result):
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def c_accept(fd):
    """accept(2) itself: CPython's accept() uses accept4(SOCK_CLOEXEC) where it can, and on
    FreeBSD that alone stops O_NONBLOCK being inherited."""
    fn = _libc.function("accept", ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p])
    return _checked(fn(fd, None, None))


def c_accept4(fd, flags):
    """accept4(2); raises _libc.Missing where the C library has none (macOS)."""
    fn = _libc.function("accept4", ctypes.c_int,
                        [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int])
    return _checked(fn(fd, None, None, flags))


def c_socketpair(family, kind):
    """socketpair(2) itself, with ``kind`` passed through untouched: two raw fds."""
    fn = _libc.function("socketpair", ctypes.c_int,
                        [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)])
    pair = (ctypes.c_int * 2)()
    _checked(fn(family, kind, 0, pair))
    return pair[0], pair[1]


# --- recvmsg(2) through libc, for what CPython hides: the cmsg_len the kernel wrote ------

class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _msghdr_layout(sysname):
    """struct msghdr and the type of cmsghdr.cmsg_len on this system.

    Linux (glibc and musl, and gVisor, which has its ABI) uses size_t for msg_iovlen,
    msg_controllen and cmsg_len; macOS <sys/socket.h> and FreeBSD <sys/socket.h> use int,
    socklen_t and socklen_t.
    """
    linux = sysname == "Linux"
    iovlen = ctypes.c_size_t if linux else ctypes.c_int
    length = ctypes.c_size_t if linux else ctypes.c_uint32

    class Msghdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", iovlen),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", length),
                    ("msg_flags", ctypes.c_int)]
    return Msghdr, length


class RawReceived:
    """What a libc recvmsg returned: bytes, flags, and the control bytes exactly as written."""

    def __init__(self, nbytes, flags, control, cmsg_len_type):
        self.nbytes = nbytes
        self.flags = flags
        self.control = control
        self._cmsg_len_type = cmsg_len_type

    @property
    def first_cmsg_len(self):
        """The first cmsghdr's cmsg_len, or None when not even its length was copied out."""
        size = ctypes.sizeof(self._cmsg_len_type)
        if len(self.control) < size:
            return None
        return self._cmsg_len_type.from_buffer_copy(self.control[:size]).value


def c_recvmsg(fd, bufsize, controlsize, flags=0):
    """recvmsg(2) itself; the caller counts (and closes) any fds it installed."""
    Msghdr, length = _msghdr_layout(os.uname().sysname)
    fn = _libc.function("recvmsg", ctypes.c_ssize_t,
                        [ctypes.c_int, ctypes.POINTER(Msghdr), ctypes.c_int])
    data = ctypes.create_string_buffer(bufsize)
    control = ctypes.create_string_buffer(max(controlsize, 1))
    iov = _Iovec(ctypes.cast(data, ctypes.c_void_p), bufsize)
    header = Msghdr(None, 0, ctypes.pointer(iov), 1,
                    ctypes.cast(control, ctypes.c_void_p) if controlsize else None,
                    controlsize, 0)
    nbytes = _checked(fn(fd, ctypes.byref(header), flags))
    return RawReceived(nbytes, header.msg_flags, control.raw[:header.msg_controllen], length)
