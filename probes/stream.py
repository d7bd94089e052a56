"""AF_UNIX SOCK_STREAM: no message boundaries, a peer that has gone, SIGPIPE and the two
ways to suppress it, half-close, the listen backlog, buffer sizes, the flags an accepted
socket gets, and two one-platform features (MSG_OOB, SO_PEEK_OFF).

Python starts with SIGPIPE ignored, so every "does it kill?" question is asked in a
forked child that puts SIGPIPE back to SIG_DFL, as a C program has it.  Every read is
bounded by SO_RCVTIMEO and every connect that may wait by SO_SNDTIMEO, on blocking
sockets.  Socket files are short names in the observation's scratch directory.
"""
import contextlib
import os
import socket

from . import _fds, _libc, harness
from .harness import EOF, OK, UNSUPPORTED, Measured, bounded_recv, bounded_send, \
    experiment, observation, outcome

LISTEN_BACKLOG = 1
MAX_PENDING = 64          # far above any platform's answer for listen(1)
CHILD_TIMEOUT = harness.scaled(5.0)       # a child that sends one byte to a dead peer
FILL_CHUNK = 1 << 16      # first write size when filling a stream; halved at each EAGAIN
FILL_CEILING = 1 << 26    # no unix stream buffers 64 MiB: past this the fill is a bug
SMALL_BUFFER = 32768      # a buffer size set on one end, to see which end bounds capacity

# SO_NOSIGPIPE by number where CPython does not export it (no ADD_INT_MACRO for it):
# SO_PEEK_OFF where CPython does not export it; only Linux has the option at all.
SO_PEEK_OFF_BY_SYSTEM = {
    "Linux": 42,          # include/uapi/asm-generic/socket.h: #define SO_PEEK_OFF 42
}
SO_NOSIGPIPE_BY_SYSTEM = {
    "Darwin": 0x1022,     # xnu bsd/sys/socket.h#L174; macos-facts "Python on macOS"
    "FreeBSD": 0x0800,    # FreeBSD sys/sys/socket.h: #define SO_NOSIGPIPE 0x00000800
}


def stream_pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def stream_socket():
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def read(sock, size=64):
    """One bounded recv: the text read, ``"eof"``, ``"blocks"`` or the errno name."""
    got = bounded_recv(sock, lambda: sock.recv(size))
    if isinstance(got, bytes):
        return got.decode() if got else EOF
    return got


# --- no boundaries ----------------------------------------------------------------------

@observation("stream.short_read_keeps_rest")
def short_read_keeps_rest():
    """recv(3) of "ABCDE" returns "ABC" and leaves "DE" for the next read."""
    a, b = stream_pair()
    with a, b:
        a.send(b"ABCDE")
        first = read(b, 3)
        rest = read(b)
    return Measured(rest == "DE", first=first, rest=rest)


@observation("stream.writes_coalesce")
def writes_coalesce():
    """Two sends, "ABC" and "DEF", are returned together by one recv."""
    a, b = stream_pair()
    with a, b:
        a.send(b"ABC")
        a.send(b"DEF")
        got = read(b)
    return Measured(got == "ABCDEF", read=got)


# --- a peer that has gone ----------------------------------------------------------------

@observation("stream.peer_closed.read")
def peer_closed_read():
    """A read after the peer closed returns end of file."""
    a, b = stream_pair()
    with a:
        b.close()
        return read(a)


@observation("stream.peer_closed.write")
def peer_closed_write():
    """A write after the peer closed fails with EPIPE (SIGPIPE ignored, as Python has it)."""
    a, b = stream_pair()
    with a:
        b.close()
        return outcome(a.send, b"x")


def send_to_closed_peer(flags, option):
    """In the child: set ``option`` if given, then send one byte to a peer that has closed."""
    a, b = stream_pair()
    b.close()
    with a:
        if option is not None:
            refused = outcome(a.setsockopt, socket.SOL_SOCKET, option, 1)
            if refused != OK:
                return {"setsockopt": refused}
        return {"send": outcome(a.send, b"x", flags)}


def closed_peer_in_child(flags=0, option=None):
    """send_to_closed_peer in a forked child whose SIGPIPE is SIG_DFL: its ChildResult."""
    result = harness.in_child(send_to_closed_peer, flags, option,
                              sigpipe_default=True, timeout=CHILD_TIMEOUT)
    if result.error:
        raise harness.Unmeasurable(f"the child failed: {result.error}")
    if result.signal and result.signal_name != "SIGPIPE":
        raise harness.Unmeasurable(f"the child died of {result.signal_name}")
    return result


def suppression(flags=0, option=None):
    """Whether a send flag or a socket option keeps a child alive on a dead peer.

    ``"ok"`` only when the child survives *and* its send failed with EPIPE, so an option
    number the kernel accepts but ignores is never taken for support: the child dies,
    and the value says ``"no-effect"``.
    """
    result = closed_peer_in_child(flags, option)
    if result.signal_name == "SIGPIPE":
        return Measured("no-effect", signal="SIGPIPE")
    if "setsockopt" in result.value:
        return Measured(UNSUPPORTED, setsockopt=result.value["setsockopt"])
    sent = result.value["send"]
    if sent == "EPIPE":
        return Measured(OK, send=sent)
    if sent in ("EINVAL", "EOPNOTSUPP"):  # the kernel refused the flag itself
        return Measured(UNSUPPORTED, send=sent)
    return Measured(sent, send=sent)


@observation("stream.peer_closed.sigpipe_kills")
def sigpipe_kills():
    """A process with default SIGPIPE handling dies of SIGPIPE writing to a closed peer."""
    result = closed_peer_in_child()
    if result.signal_name == "SIGPIPE":
        return Measured(True, signal="SIGPIPE")
    return Measured(False, send=result.value["send"])


@observation("stream.msg_nosignal")
def msg_nosignal():
    """send(MSG_NOSIGNAL) to a closed peer fails with EPIPE and raises no SIGPIPE.

    ``"no-effect"`` where the flag is accepted yet SIGPIPE still kills the child.
    """
    flag = harness.constant("MSG_NOSIGNAL")
    if flag is None:
        return Measured(UNSUPPORTED, reason="this Python has no socket.MSG_NOSIGNAL")
    return suppression(flags=flag)


def so_nosigpipe_option():
    """The SO_NOSIGPIPE option number: Python's constant, else the OS's from its headers."""
    return harness.constant("SO_NOSIGPIPE") or SO_NOSIGPIPE_BY_SYSTEM.get(os.uname().sysname)


@observation("stream.so_nosigpipe")
def so_nosigpipe():
    """With SO_NOSIGPIPE set, a write to a closed peer fails with EPIPE and raises no SIGPIPE.

    ``"no-effect"`` where setsockopt accepts the option yet SIGPIPE still kills the child.
    """
    option = so_nosigpipe_option()
    if option is None:
        return Measured(UNSUPPORTED, reason=f"no SO_NOSIGPIPE on {os.uname().sysname}")
    measured = suppression(option=option)
    measured.detail["option"] = hex(option)
    return measured


@observation("stream.close_with_unread.peer_read")
def close_with_unread_peer_read():
    """The survivor's read after its peer closed with data unread: ECONNRESET (Linux) or EOF."""
    a, b = stream_pair()
    with a:
        a.send(b"unread")
        b.close()
        first = read(a)
        return Measured(first, then=read(a))


# --- half-close --------------------------------------------------------------------------

@experiment
def half_close():
    """a shuts down its writing side; what b then reads, and what a reads of b's reply."""
    a, b = stream_pair()
    with a, b:
        a.shutdown(socket.SHUT_WR)
        peer_sees = read(b)
        reply = outcome(b.send, b"back")
        return {"peer_sees": peer_sees, "reply": reply, "reverse": read(a)}


@observation("stream.shutdown_wr.peer_eof")
def shutdown_wr_peer_eof():
    """After shutdown(SHUT_WR) the peer reads end of file."""
    seen = half_close()
    return Measured(seen["peer_sees"] == EOF, peer_read=seen["peer_sees"])


@observation("stream.shutdown_wr.reverse_works")
def shutdown_wr_reverse_works():
    """After shutdown(SHUT_WR) the peer can still send back, and the data arrives."""
    seen = half_close()
    return Measured(seen["reverse"] == "back", reply_send=seen["reply"], read=seen["reverse"])


# --- the listen backlog ------------------------------------------------------------------

@contextlib.contextmanager
def listening(name):
    """A stream socket bound to ``name`` and listening with LISTEN_BACKLOG; never accepts."""
    sock = stream_socket()
    try:
        sock.bind(name)
        sock.listen(LISTEN_BACKLOG)
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def full_backlog():
    """A listener on "l" that non-blocking connects have filled: yields (count, stopped_by)."""
    with listening("l"), contextlib.ExitStack() as clients:
        count = 0
        while True:
            client = clients.enter_context(stream_socket())
            client.setblocking(False)
            result = outcome(client.connect, "l")
            if result != OK:
                break
            count += 1
            if count > MAX_PENDING:
                raise harness.Unmeasurable(f"listen({LISTEN_BACKLOG}) took {MAX_PENDING} "
                                           f"connections without refusing one")
        yield count, result


@observation("stream.backlog.pending_accepted")
def backlog_pending_accepted():
    """Connections that complete against listen(1), none accepted, before one would wait or fail."""
    with full_backlog() as (count, stopped_by):
        return Measured(count, backlog=LISTEN_BACKLOG, next_nonblocking_connect=stopped_by)


@observation("stream.backlog_full.blocking_connect")
def backlog_full_blocking_connect():
    """A blocking connect to a full backlog waits (Linux) or is refused at once."""
    with full_backlog() as (pending, _), stream_socket() as client:
        return Measured(bounded_send(client, lambda: harness.connect_as_c(client, "l")),
                        pending=pending, window_s=harness.block_window())


@observation("stream.backlog_full.nonblocking_connect")
def backlog_full_nonblocking_connect():
    """A non-blocking connect to a full backlog fails: EAGAIN (Linux) or ECONNREFUSED."""
    with full_backlog(), stream_socket() as client:
        client.setblocking(False)
        return outcome(client.connect, "l")


# --- buffer sizes ------------------------------------------------------------------------

@observation("stream.sndbuf_readback")
def sndbuf_readback():
    """getsockopt(SO_SNDBUF) after setting 4096: 8192 where the kernel doubles it (Linux)."""
    with stream_socket() as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return Measured(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                        set=4096, default=default)



def fill(sock):
    """Non-blocking sends into ``sock`` until EAGAIN: the bytes it took, and the writes.

    Each write is FILL_CHUNK bytes, halved whenever EAGAIN comes, down to 1 byte: a few
    dozen calls whatever the capacity, and the last byte of room is found.
    """
    sock.setblocking(False)
    taken = writes = 0
    chunk = FILL_CHUNK
    block = b"x" * chunk
    while chunk:
        try:
            taken += sock.send(block[:chunk])
        except BlockingIOError:
            chunk //= 2
            continue
        writes += 1
        if taken > FILL_CEILING:
            raise harness.Unmeasurable(f"a unix stream took {FILL_CEILING} bytes without EAGAIN")
    return taken, writes


def capacity_with(sender_sndbuf=None, receiver_rcvbuf=None):
    """The bytes a fresh pair takes, after setting one end's buffer (None: the default)."""
    a, b = stream_pair()
    with a, b:
        if sender_sndbuf:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sender_sndbuf)
        if receiver_rcvbuf:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiver_rcvbuf)
        taken, writes = fill(a)
        return {"bytes": taken, "writes": writes,
                "sender_sndbuf": a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                "receiver_rcvbuf": b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}


@observation("stream.capacity")
def capacity():
    """Bytes a fresh unix stream pair takes before a non-blocking send gets EAGAIN.

    The detail says whose buffer bounds it: the fill is repeated with the sender's
    SO_SNDBUF, then the receiver's SO_RCVBUF, set to SMALL_BUFFER (Linux: the sender's).
    """
    default = capacity_with()
    small_sndbuf = capacity_with(sender_sndbuf=SMALL_BUFFER)
    small_rcvbuf = capacity_with(receiver_rcvbuf=SMALL_BUFFER)
    bounded_by = [name for name, run in (("sender_sndbuf", small_sndbuf),
                                         ("receiver_rcvbuf", small_rcvbuf))
                  if run["bytes"] < default["bytes"]]
    return Measured(default["bytes"], writes=default["writes"],
                    sender_sndbuf=default["sender_sndbuf"],
                    receiver_rcvbuf=default["receiver_rcvbuf"], bounded_by=bounded_by,
                    with_small_sndbuf=small_sndbuf, with_small_rcvbuf=small_rcvbuf)


# --- the flags an accepted socket, a pair, gets -------------------------------------------

@contextlib.contextmanager
def connected_listener(nonblocking=False):
    """A listener on "l" with one client connected and waiting to be accepted."""
    with listening("l") as sock, stream_socket() as client:
        client.connect("l")
        sock.setblocking(not nonblocking)
        yield sock


def accepted_flags(accept, *args, nonblocking=False):
    """Flags of the fd ``accept(listener_fd, *args)`` returns (the fd is closed after)."""
    with connected_listener(nonblocking) as sock:
        fd = accept(sock.fileno(), *args)
        try:
            return _fds.fd_flags(fd)
        finally:
            os.close(fd)


@observation("stream.accept.inherits_nonblock")
def accept_inherits_nonblock():
    """accept(2) on a non-blocking listener returns a non-blocking socket (BSD: yes, Linux: no).

    accept(2) itself is called, through libc: CPython's accept uses accept4 where it can.
    """
    try:
        from_nonblocking = accepted_flags(_fds.c_accept, nonblocking=True)
        from_blocking = accepted_flags(_fds.c_accept)
    except _libc.Missing:
        raise harness.Unmeasurable("the C library has no accept()") from None
    return Measured(from_nonblocking["nonblock"],
                    control_blocking_listener=from_blocking["nonblock"])


def both_flags(flags):
    """``"ok"`` when an fd has both FD_CLOEXEC and O_NONBLOCK, else which were missing."""
    missing = [name for name, on in flags.items() if not on]
    return OK if not missing else "ignored:" + "+".join(missing)


def atomic_flag_constants():
    """SOCK_CLOEXEC | SOCK_NONBLOCK, or None where either is missing (macOS)."""
    cloexec, nonblock = harness.constant("SOCK_CLOEXEC"), harness.constant("SOCK_NONBLOCK")
    return None if cloexec is None or nonblock is None else cloexec | nonblock


@observation("stream.accept4")
def accept4():
    """accept4(SOCK_CLOEXEC | SOCK_NONBLOCK) gives the new socket both flags at once.

    ``"unsupported"`` without accept4 or the flags (macOS); ``"ignored:<flag>"`` if a
    flag did not take.  The control is a plain accept(2), which sets neither.
    """
    flags = atomic_flag_constants()
    if flags is None:
        return Measured(UNSUPPORTED, reason="no SOCK_CLOEXEC/SOCK_NONBLOCK here")
    try:
        got = accepted_flags(_fds.c_accept4, flags)
    except _libc.Missing:
        return Measured(UNSUPPORTED, reason="the C library has no accept4()")
    except OSError as exc:
        return harness.errno_name(exc)
    return Measured(both_flags(got), control_accept=accepted_flags(_fds.c_accept))


# --- one-platform features ------------------------------------------------------------------

@observation("stream.msg_oob")
def msg_oob():
    """send(MSG_OOB) of 1 byte on a unix stream, read back with recv(MSG_OOB) ("ok").

    Linux >= 5.15 with CONFIG_AF_UNIX_OOB: ok; macOS, FreeBSD: EOPNOTSUPP at the send.
    Where the send works but the byte does not come back out of band, the value is
    ``"ignored"`` when recv(MSG_OOB) returned ordinary in-line data (gVisor), else the
    errno of recv(MSG_OOB).
    """
    a, b = stream_pair()
    with a, b:
        a.send(b"ab")
        sent = outcome(a.send, b"X", socket.MSG_OOB)
        if sent != OK:
            return Measured(sent, at="send")
        b.setblocking(False)
        try:
            urgent = b.recv(1, socket.MSG_OOB).decode()
        except OSError as exc:
            urgent = value = harness.errno_name(exc)
        else:
            value = OK if urgent == "X" else "ignored"
        inline = read(b)
        return Measured(value, oob_read=urgent, inline_read=inline)


def so_peek_off_option():
    return harness.constant("SO_PEEK_OFF") or SO_PEEK_OFF_BY_SYSTEM.get(os.uname().sysname)


@observation("stream.so_peek_off")
def so_peek_off():
    """SO_PEEK_OFF = 2 on a unix stream holding "ABCDE" makes recv(2, MSG_PEEK) return "CD".

    ``"ok"`` when it does; ``"ignored"`` when the peek starts at "AB"; the errno where
    setsockopt refuses it; ``"unsupported"`` where the platform has no such option
    (only Linux defines SO_PEEK_OFF).
    """
    option = so_peek_off_option()
    if option is None:
        return Measured(UNSUPPORTED, reason=f"no SO_PEEK_OFF on {os.uname().sysname}")
    a, b = stream_pair()
    with a, b:
        a.send(b"ABCDE")
        refused = outcome(b.setsockopt, socket.SOL_SOCKET, option, 2)
        if refused != OK:
            return Measured(refused, option=option)
        peeked = read_peek(b, 2)
        then = read_peek(b, 1)
        rest = read(b)
    value = OK if peeked == "CD" else ("ignored" if peeked == "AB" else peeked)
    return Measured(value, peek=peeked, next_peek=then, read=rest)


def read_peek(sock, size):
    got = bounded_recv(sock, lambda: sock.recv(size, socket.MSG_PEEK))
    return got.decode() if isinstance(got, bytes) else got


if __name__ == "__main__":
    harness.main()
