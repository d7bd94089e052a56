"""AF_UNIX SOCK_STREAM: no message boundaries, a peer that has gone, SIGPIPE and the two
ways to suppress it, half-close, the listen backlog and SO_SNDBUF.

Python starts with SIGPIPE ignored, so every "does it kill?" question is asked in a
forked child that puts SIGPIPE back to SIG_DFL, as a C program has it.  Every read is
bounded by SO_RCVTIMEO and every connect that may wait by SO_SNDTIMEO, on blocking
sockets.  Socket files are short names in the observation's scratch directory.
"""
import contextlib
import os
import socket

from . import harness
from .harness import EOF, OK, UNSUPPORTED, Measured, bounded_recv, bounded_send, \
    experiment, observation, outcome

LISTEN_BACKLOG = 1
MAX_PENDING = 64          # far above any platform's answer for listen(1)
CHILD_TIMEOUT = harness.scaled(5.0)       # a child that sends one byte to a dead peer

# SO_NOSIGPIPE by number where CPython does not export it (no ADD_INT_MACRO for it):
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
    """send(MSG_NOSIGNAL) to a closed peer fails with EPIPE and raises no SIGPIPE."""
    flag = harness.constant("MSG_NOSIGNAL")
    if flag is None:
        return Measured(UNSUPPORTED, reason="this Python has no socket.MSG_NOSIGNAL")
    return suppression(flags=flag)


def so_nosigpipe_option():
    """The SO_NOSIGPIPE option number: Python's constant, else the OS's from its headers."""
    return harness.constant("SO_NOSIGPIPE") or SO_NOSIGPIPE_BY_SYSTEM.get(os.uname().sysname)


@observation("stream.so_nosigpipe")
def so_nosigpipe():
    """With SO_NOSIGPIPE set, a write to a closed peer fails with EPIPE and raises no SIGPIPE."""
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


if __name__ == "__main__":
    harness.main()
