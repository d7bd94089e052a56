"""Passing open fds with SCM_RIGHTS: what the receiver gets, and what it gets without asking.

Every count of fds "installed" or "leaked" is measured by listing the receiver's fd
table before and after (probes/_fds.py), so a platform that installs fds it does not
name (macOS, on a short control buffer) shows up as a number, not a guess.  Every
observation runs inside ``_fds.sweep()``, which closes whatever it left open, and the
last key reports the probe's own fd count at start and end: a run leaks nothing.
"""
import contextlib
import fcntl
import os
import resource
import select
import socket

from . import _fds, harness
from ._fds import received, room_for, send_fds, space_for
from .harness import Measured, errno_name, experiment, observation
from .stream import fill

SENT = 4          # fds sent to a receiver that has room for fewer (spec: 4)
SEARCH_CAP = 1 << 16


def stream_pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


class Pipe:
    """A pipe whose write end may be closed early (handed off); close() closes the rest."""

    def __init__(self):
        self.r, self.w = os.pipe()

    def close_writer(self):
        os.close(self.w)
        self.w = None

    def writer_alive(self):
        return _fds.writer_alive(self.r)

    def close(self):
        _fds.close_all([fd for fd in (self.r, self.w) if fd is not None])
        self.r = self.w = None


def pipe():
    return contextlib.closing(Pipe())


@contextlib.contextmanager
def data_file(text=b"0123456789"):
    """A regular file in the scratch directory, open read-write, holding ``text``."""
    fd = os.open("f", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text)
        yield fd
    finally:
        os.close(fd)
        os.unlink("f")


@contextlib.contextmanager
def passed(fd, kind=socket.SOCK_STREAM, recv_flags=0):
    """Send ``fd`` over a fresh socketpair and yield the receiver's copy (closed after)."""
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    with a, b:
        send_fds(a, [fd])
        with received(b, space_for(1), flags=recv_flags) as got:
            if len(got.named) != 1:
                raise harness.Unmeasurable(f"sent 1 fd, control data named {got.named} "
                                           f"(flags {got.flags:#x})")
            yield got.named[0]


def travels(fd, kind=socket.SOCK_STREAM):
    """``"ok"`` if ``fd`` arrives as the same file, ``"dropped"`` if not at all, else errno
    (of socketpair, sendmsg or recvmsg)."""
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
    except OSError as exc:
        return errno_name(exc)
    with a, b:
        try:
            send_fds(a, [fd])
        except OSError as exc:
            return errno_name(exc)
        b.setblocking(False)
        try:
            with received(b, space_for(1)) as got:
                if not got.named:
                    return "dropped"
                return harness.OK if _fds.same_file(got.named[0], fd) else "other-file"
        except OSError as exc:
            return errno_name(exc)


# --- the received fd is the sender's open file description (B21, B22) -------------------

@observation("fdpass.shared_offset")
def shared_offset():
    """The received fd shares the sender's file offset, both ways (same open file description)."""
    with _fds.sweep(), data_file() as fd:
        os.lseek(fd, 2, os.SEEK_SET)
        with passed(fd) as copy:
            seen_by_receiver = os.lseek(copy, 0, os.SEEK_CUR)
            os.lseek(copy, 7, os.SEEK_SET)
            seen_by_sender = os.lseek(fd, 0, os.SEEK_CUR)
    return Measured(seen_by_receiver == 2 and seen_by_sender == 7,
                    receiver_saw=seen_by_receiver, sender_saw_after_receiver_seek=seen_by_sender)


@observation("fdpass.shared_status_flags")
def shared_status_flags():
    """O_APPEND|O_NONBLOCK set with F_SETFL on the received fd show on the sender's fd."""
    wanted = os.O_APPEND | os.O_NONBLOCK
    with _fds.sweep(), data_file() as fd:
        before = fcntl.fcntl(fd, fcntl.F_GETFL) & wanted
        with passed(fd) as copy:
            fcntl.fcntl(copy, fcntl.F_SETFL, fcntl.fcntl(copy, fcntl.F_GETFL) | wanted)
            after = fcntl.fcntl(fd, fcntl.F_GETFL) & wanted
    return Measured(before == 0 and after == wanted, sender_flags_before=before,
                    sender_flags_after=after)


@observation("fdpass.cloexec_shared")
def cloexec_shared():
    """FD_CLOEXEC set on the sender's fd is not carried over: it is per descriptor."""
    with _fds.sweep(), data_file() as fd:
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        with passed(fd) as copy:
            return bool(fcntl.fcntl(copy, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


@observation("fdpass.lowest_free_fd")
def lowest_free_fd():
    """The received fd takes the lowest free number (a hole left below higher open fds)."""
    with _fds.sweep(), data_file() as fd:
        a, b = stream_pair()
        with a, b:
            send_fds(a, [fd])
            spares = [os.dup(fd) for _ in range(3)]
            os.close(spares[0])          # a hole below two open fds
            try:
                expected = _fds.lowest_free()
                with received(b, space_for(1)) as got:
                    return Measured(got.named == [expected], hole=spares[0],
                                    lowest_free=expected, received=got.named)
            finally:
                _fds.close_all(spares[1:])


# --- how many fds one message carries (B23) ----------------------------------------------

def send_count(fd, count):
    """Try one sendmsg carrying ``fd`` ``count`` times on a fresh pair: "ok" or errno.

    The pair is closed unread, which releases the references in flight.
    """
    a, b = stream_pair()
    with a, b:
        try:
            send_fds(a, [fd] * count)
        except OSError as exc:
            return errno_name(exc)
    return harness.OK


@experiment
def fd_limit():
    """The largest count sendmsg accepts (doubling, then bisection) and the errno past it."""
    with _fds.sweep(), pipe() as p:
        w = p.w
        largest, past, _ = harness.largest_accepted(lambda n: send_count(w, n), 1, SEARCH_CAP)
        delivered = receive_all(w, largest)
    return {"max": largest, "past": past, "delivered": delivered}


def receive_all(fd, count):
    """Send ``count`` copies of ``fd`` and count the fds the receiver is given for them."""
    with _fds.nofile_room(count):
        a, b = stream_pair()
        with a, b:
            send_fds(a, [fd] * count)
            with received(b, space_for(count)) as got:
                return len(got.named) if not got.ctrunc else f"ctrunc after {len(got.named)}"


@observation("fdpass.max_fds_per_message")
def max_fds_per_message():
    """The most fds one SCM_RIGHTS message carries (found by search), all delivered."""
    limit = fd_limit()
    return Measured(limit["max"], received_at_max=limit["delivered"])


@observation("fdpass.too_many_fds")
def too_many_fds():
    """One fd more than the most a message carries: sendmsg fails with this errno."""
    return fd_limit()["past"]


# --- a control buffer too small, or none (B24, B30) ----------------------------------------

@experiment
def truncated():
    """Send 4 pipe write ends to a control buffer of CMSG_LEN(sizeof(int)): room for one."""
    with _fds.sweep(), contextlib.ExitStack() as stack:
        pipes = [stack.enter_context(pipe()) for _ in range(SENT)]
        a, b = stream_pair()
        with a, b:
            send_fds(a, [p.w for p in pipes])
            for p in pipes:
                p.close_writer()            # only the message holds them now
            with received(b, room_for(1)) as got:
                alive = sum(p.writer_alive() for p in pipes)
                return {"flag": got.ctrunc, "installed": len(got.gained),
                        "leaked": len(got.unnamed), "named": len(got.named),
                        "control_bytes": room_for(1), "writers_alive": alive}


@observation("fdpass.ctrunc.flag")
def ctrunc_flag():
    """recvmsg sets MSG_CTRUNC when 4 fds arrive at a control buffer with room for 1."""
    result = truncated()
    return Measured(result["flag"], control_bytes=result["control_bytes"])


@observation("fdpass.ctrunc.installed")
def ctrunc_installed():
    """How many of the 4 fds the receiver's fd table gained (counted in the table)."""
    result = truncated()
    return Measured(result["installed"], named=result["named"],
                    writers_alive=result["writers_alive"])


@observation("fdpass.ctrunc.leaked")
def ctrunc_leaked():
    """How many fds the receiver gained that the control data does not name."""
    result = truncated()
    return Measured(result["leaked"], installed=result["installed"], named=result["named"])


@observation("fdpass.no_control_buffer.leaked")
def no_control_buffer_leaked():
    """fds gained by a receiver that passed no control buffer, when 4 were sent."""
    with _fds.sweep(), contextlib.ExitStack() as stack:
        pipes = [stack.enter_context(pipe()) for _ in range(SENT)]
        a, b = stream_pair()
        with a, b:
            send_fds(a, [p.w for p in pipes])
            for p in pipes:
                p.close_writer()
            with received(b, 0) as got:
                alive = sum(p.writer_alive() for p in pipes)
                return Measured(len(got.gained), ctrunc=got.ctrunc, writers_alive=alive)


@observation("fdpass.ctrunc.cmsg_len")
def ctrunc_cmsg_len():
    """The cmsg_len a receiver reads in the header after MSG_CTRUNC (4 fds sent, room for 1).

    Read through libc's recvmsg, since CPython cuts each item at msg_controllen: Linux
    rewrites it to what was copied (CMSG_LEN(sizeof(int))), macOS leaves the sender's
    length (rust-vmm/vmm-sys-util#245); ``null`` when no header came back at all.
    """
    with _fds.sweep(), contextlib.ExitStack() as stack:
        pipes = [stack.enter_context(pipe()) for _ in range(SENT)]
        a, b = stream_pair()
        with a, b:
            send_fds(a, [p.w for p in pipes])
            before = _fds.open_fds()
            got = _fds.c_recvmsg(b.fileno(), 16, room_for(1))
            gained = sorted(_fds.open_fds() - before)
            _fds.close_all(gained)
    return Measured(got.first_cmsg_len, ctrunc=bool(got.flags & socket.MSG_CTRUNC),
                    control_bytes=room_for(1), controllen_returned=len(got.control),
                    cmsg_len_for_one=room_for(1), cmsg_len_for_all=room_for(SENT),
                    installed=len(gained))


@observation("fdpass.multiple_cmsgs")
def multiple_cmsgs():
    """One sendmsg carrying two SCM_RIGHTS cmsgs of one fd each: "ok" when both fds arrive.

    Else the errno of sendmsg (macOS takes exactly one cmsghdr per message: EINVAL), or
    ``"received:<n>"`` when the send worked but only n fds came out.
    """
    with _fds.sweep(), pipe() as first, pipe() as second:
        a, b = stream_pair()
        with a, b:
            control = _fds.rights([first.w]) + _fds.rights([second.w])
            try:
                a.sendmsg([b"x"], control)
            except OSError as exc:
                return errno_name(exc)
            b.setblocking(False)
            with received(b, space_for(2) * 2) as got:
                delivered = [fd for fd in got.named
                             if _fds.same_file(fd, first.w) or _fds.same_file(fd, second.w)]
                value = harness.OK if len(delivered) == 2 else f"received:{len(delivered)}"
                return Measured(value, named=len(got.named), ctrunc=got.ctrunc,
                                unnamed=len(got.unnamed))


@observation("fdpass.stream.send_when_nearly_full")
def send_when_nearly_full():
    """sendmsg of 1 byte + SCM_RIGHTS into an almost full non-blocking stream: "ok" or errno.

    Almost full: filled until EAGAIN, then the reader takes one byte back.  "partial"
    when the send worked but the fd never arrived; else the errno (macOS: EMSGSIZE, the
    control does not fit the room left; Linux: the EAGAIN a plain send gets too).

    The detail has the control: a plain 1-byte send in the same state, made after.
    """
    with _fds.sweep(), pipe() as p:
        a, b = stream_pair()
        with a, b:
            filled, _ = fill(a)
            b.recv(1)                           # the reader takes one byte back
            try:
                send_fds(a, [p.w])
            except OSError as exc:
                sent = errno_name(exc)
            else:
                sent = harness.OK
            plain = harness.outcome(a.send, b"y")
            if sent != harness.OK:
                return Measured(sent, filled=filled, plain_send_after=plain)
            arrived = drain_for_fd(b, p.w, filled + 2)
            return Measured(harness.OK if arrived else "partial", filled=filled,
                            plain_send_after=plain)


def drain_for_fd(sock, fd, most):
    """Read (non-blocking) up to ``most`` bytes; True once an fd for ``fd``'s file arrives."""
    sock.setblocking(False)
    seen = 0
    while seen <= most:
        try:
            with received(sock, space_for(1), bufsize=1 << 16) as got:
                if any(_fds.same_file(named, fd) for named in got.named):
                    return True
                if not got.data:
                    return False
                seen += len(got.data)
        except BlockingIOError:
            return False
    return False


# --- when and over what fds travel (B25, B26, B27) ---------------------------------------

def send_and_exit(sock, fd):
    """The sender: pass ``fd`` and exit, so every copy it held is closed."""
    send_fds(sock, [fd])
    return harness.OK


@observation("fdpass.sender_closed_before_recv")
def sender_closed_before_recv():
    """A sender that exits right after sendmsg: the receiver still gets a working fd."""
    with _fds.sweep(), pipe() as p:
        a, b = stream_pair()
        with a, b:
            child = harness.in_child(send_and_exit, a, p.w)
            if child.error:
                raise harness.Unmeasurable(f"sender failed: {child.error}")
            p.close_writer()                 # now only the message in flight holds it
            in_flight_alive = p.writer_alive()
            with received(b, space_for(1)) as got:
                if not got.named:
                    return Measured("dropped", ctrunc=got.ctrunc)
                try:
                    os.write(got.named[0], b"y")
                except OSError as exc:
                    return errno_name(exc)
                return Measured(harness.OK if os.read(p.r, 1) == b"y" else "other-file",
                                writer_alive_while_in_flight=in_flight_alive)


@observation("fdpass.over_dgram")
def over_dgram():
    """An fd passes over an AF_UNIX SOCK_DGRAM socketpair and arrives as the same file."""
    with _fds.sweep(), data_file() as fd:
        return travels(fd, socket.SOCK_DGRAM)


@observation("fdpass.over_seqpacket")
def over_seqpacket():
    """An fd passes over an AF_UNIX SOCK_SEQPACKET socketpair (errno where there is none)."""
    seqpacket = harness.constant("SOCK_SEQPACKET")
    if seqpacket is None:
        return harness.UNSUPPORTED
    with _fds.sweep(), data_file() as fd:
        return travels(fd, seqpacket)


@observation("fdpass.zero_data_stream")
def zero_data_stream():
    """An fd sent with zero data bytes on a stream: "delivered", "dropped" or errno."""
    with _fds.sweep(), data_file() as fd:
        a, b = stream_pair()
        with a, b:
            try:
                sent = send_fds(a, [fd], data=b"")
            except OSError as exc:
                return errno_name(exc)
            b.setblocking(False)       # AF_UNIX queues at once: nothing now is nothing
            try:
                with received(b, space_for(1)) as got:
                    value = "delivered" if got.named else "dropped"
                    return Measured(value, sendmsg_returned=sent, data=got.data.decode())
            except BlockingIOError:
                return Measured("dropped", sendmsg_returned=sent, receiver="EAGAIN")


# --- receiving options and odd cases (B28, B29, B31, B32) ----------------------------------

@observation("fdpass.cmsg_cloexec")
def cmsg_cloexec():
    """recvmsg(MSG_CMSG_CLOEXEC) gives the received fd FD_CLOEXEC ("unsupported" without it)."""
    flag = harness.constant("MSG_CMSG_CLOEXEC")
    if flag is None:
        return harness.UNSUPPORTED
    with _fds.sweep(), data_file() as fd:
        fcntl.fcntl(fd, fcntl.F_SETFD, 0)
        try:
            with passed(fd, recv_flags=flag) as copy:
                cloexec = fcntl.fcntl(copy, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        except OSError as exc:
            return errno_name(exc)
        return harness.OK if cloexec else "ignored"


@observation("fdpass.self_passing")
def self_passing():
    """A socket sent into its own receive queue is received back as the same socket."""
    with _fds.sweep():
        a, b = stream_pair()
        with a, b:
            try:
                send_fds(a, [b.fileno()])
            except OSError as exc:
                return errno_name(exc)
            with received(b, space_for(1)) as got:
                if not got.named:
                    return Measured("dropped", ctrunc=got.ctrunc)
                return harness.OK if _fds.same_file(got.named[0], b.fileno()) else "other-file"


def receive_at_limit():
    """In a child: send 1 fd, fill the fd table to RLIMIT_NOFILE, then recvmsg it."""
    a, b = stream_pair()
    r, w = os.pipe()
    send_fds(a, [w])
    os.close(w)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(_fds.open_fds()) + 1, hard))
    fillers = []
    try:
        while True:
            fillers.append(os.dup(0))
    except OSError as exc:
        if errno_name(exc) != "EMFILE":
            raise
    b.setblocking(False)
    detail = {"filled_with": len(fillers)}
    try:
        data, ancdata, flags, _ = b.recvmsg(16, space_for(1))
    except OSError as exc:
        value = errno_name(exc)
    else:
        named = _fds.fds_named(ancdata)
        detail["data"] = data.decode()
        value = harness.OK if named else ("ctrunc" if flags & socket.MSG_CTRUNC else "dropped")
    detail["writer_closed"] = not _fds.writer_alive(r)
    return value, detail


@observation("fdpass.receiver_at_fd_limit")
def receiver_at_fd_limit():
    """A receiver with no free fd slot (RLIMIT_NOFILE lowered in a child): "ctrunc" or errno.

    ``"dropped"`` when recvmsg succeeds with neither the fd nor MSG_CTRUNC (gVisor).
    """
    with _fds.sweep():
        child = harness.in_child(receive_at_limit)
    if child.error:
        raise harness.Unmeasurable(f"child failed: {child.error}")
    value, detail = child.value
    return Measured(value, **detail)


@observation("fdpass.kinds.pipe")
def kinds_pipe():
    """A pipe's read end can be passed and arrives as the same pipe."""
    with _fds.sweep(), pipe() as p:
        return travels(p.r)


@observation("fdpass.kinds.directory")
def kinds_directory():
    """A directory opened O_RDONLY|O_DIRECTORY can be passed."""
    with _fds.sweep():
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            return travels(fd)
        finally:
            os.close(fd)


def event_queue():
    """This platform's event queue object (epoll, else kqueue) and its name, or (None, None)."""
    for name in ("epoll", "kqueue"):
        make = harness.constant(name, select)
        if make is not None:
            return make(), name
    return None, None


@observation("fdpass.kinds.event_queue")
def kinds_event_queue():
    """An epoll (Linux) or kqueue (macOS, FreeBSD) fd can be passed: "ok" or errno."""
    with _fds.sweep():
        queue, mechanism = event_queue()
        if queue is None:
            return Measured(harness.UNSUPPORTED, mechanism=None)
        with contextlib.closing(queue):
            return Measured(travels(queue.fileno()), mechanism=mechanism)


# --- the probe's own accounting --------------------------------------------------------------

STARTED_WITH = None   # the probe process's open fds before the first observation


@observation("fdpass.probe_leaked_fds")
def probe_leaked_fds():
    """After every other observation this probe holds no fd it did not start with."""
    if STARTED_WITH is None:
        raise harness.Unmeasurable("run as `python -m probes.fdpass` to record the start")
    now = _fds.open_fds()
    return Measured(len(now - STARTED_WITH), started_with=len(STARTED_WITH),
                    ended_with=len(now), extra=sorted(now - STARTED_WITH),
                    swept=sorted(set(_fds.SWEPT)), fd_source=_fds.fd_source())


if __name__ == "__main__":
    STARTED_WITH = _fds.open_fds()
    harness.main()
