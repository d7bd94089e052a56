"""socketpair(2): which socket types it pairs, whether AF_INET can be paired, and that
both ends of a pair can send and receive.

    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);     /* then SOCK_DGRAM, SOCK_SEQPACKET */
    socketpair(AF_INET, SOCK_STREAM, 0, sv);     /* no network protocol pairs */
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv);
"""
import socket

from . import _fds, _libc, harness
from .harness import Measured, bounded_recv, errno_name, observation


def pair_outcome(family, type_name):
    """``"ok"`` if ``socketpair(family, type)`` makes a pair, else the errno name.

    The type is looked up at call time, so a Python without it (or a test hiding it)
    gives ``"unsupported"`` rather than an AttributeError.
    """
    kind = harness.constant(type_name)
    if kind is None:
        return harness.UNSUPPORTED
    try:
        a, b = socket.socketpair(family, kind)
    except OSError as exc:
        return errno_name(exc)
    a.close()
    b.close()
    return harness.OK


@observation("socketpair.stream")
def stream():
    """socketpair(AF_UNIX, SOCK_STREAM) makes a connected pair."""
    return pair_outcome(socket.AF_UNIX, "SOCK_STREAM")


@observation("socketpair.dgram")
def dgram():
    """socketpair(AF_UNIX, SOCK_DGRAM) makes a connected pair."""
    return pair_outcome(socket.AF_UNIX, "SOCK_DGRAM")


@observation("socketpair.seqpacket")
def seqpacket():
    """socketpair(AF_UNIX, SOCK_SEQPACKET) makes a pair (Linux, FreeBSD) or fails (macOS)."""
    return pair_outcome(socket.AF_UNIX, "SOCK_SEQPACKET")


@observation("socketpair.inet")
def inet():
    """socketpair(AF_INET, SOCK_STREAM) fails: TCP cannot make a pair (EOPNOTSUPP)."""
    return pair_outcome(socket.AF_INET, "SOCK_STREAM")


def as_text(got):
    """What a bounded recv returned, for a report: the text read, or the outcome's name."""
    return got.decode() if isinstance(got, bytes) else got


def both_ways(kind):
    """Each end of a fresh pair sends to the other; what each end then reads."""
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    with a, b:
        a.send(b"ab")
        b.send(b"ba")
        return {"a->b": bounded_recv(b, lambda: b.recv(16)),
                "b->a": bounded_recv(a, lambda: a.recv(16))}


@observation("socketpair.full_duplex")
def full_duplex():
    """Both ends of a stream and of a datagram socketpair can send and receive."""
    seen = {"stream": both_ways(socket.SOCK_STREAM), "dgram": both_ways(socket.SOCK_DGRAM)}
    works = all(got == {"a->b": b"ab", "b->a": b"ba"} for got in seen.values())
    return Measured(works, **{kind: {way: as_text(data) for way, data in got.items()}
                              for kind, got in seen.items()})



def raw_pair_flags(kind):
    """The flags of both ends of socketpair(AF_UNIX, kind) made through libc, so that
    CPython's own FD_CLOEXEC (it makes every socket non-inheritable) does not count."""
    fds = _fds.c_socketpair(socket.AF_UNIX, kind)
    try:
        return [_fds.fd_flags(fd) for fd in fds]
    finally:
        _fds.close_all(fds)


@observation("socketpair.flags.cloexec_nonblock")
def flags_cloexec_nonblock():
    """socketpair(SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK) gives both ends both flags.

    ``"unsupported"`` where the flags do not exist (macOS); ``"ignored:<flag>"`` where a
    flag did not take; the errno where the type is refused.  The control is a plain
    socketpair(2), whose ends have neither flag.
    """
    cloexec, nonblock = harness.constant("SOCK_CLOEXEC"), harness.constant("SOCK_NONBLOCK")
    if cloexec is None or nonblock is None:
        return Measured(harness.UNSUPPORTED, reason="no SOCK_CLOEXEC/SOCK_NONBLOCK here")
    try:
        ends = raw_pair_flags(socket.SOCK_STREAM | cloexec | nonblock)
        control = raw_pair_flags(socket.SOCK_STREAM)
    except _libc.Missing:
        raise harness.Unmeasurable("the C library has no socketpair()") from None
    except OSError as exc:
        return errno_name(exc)
    missing = sorted({name for flags in ends for name, on in flags.items() if not on})
    return Measured(harness.OK if not missing else "ignored:" + "+".join(missing),
                    ends=ends, control_plain=control)


if __name__ == "__main__":
    harness.main()
