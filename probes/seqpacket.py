"""AF_UNIX SOCK_SEQPACKET: whether it exists, and where it does, whether records keep
their boundaries, what a short read does, and what a closed peer looks like.

Records are sent as a plain C program sends them, ``send(fd, "ABCDE", 5, 0)``, without
MSG_EOR: that is what FreeBSD 15 changed (a record now ends only at MSG_EOR), so these
keys show the change rather than hide it (``seqpacket.msg_eor`` sends with and without
MSG_EOR to show it directly).  Where the type is missing (macOS) every key
but ``seqpacket.supported`` is ``"unsupported"``.
"""
import socket

from . import harness
from .harness import EOF, OK, UNSUPPORTED, Measured, bounded_recv, experiment, \
    observation, outcome

CHILD_TIMEOUT = harness.scaled(5.0)


@experiment
def support():
    """socketpair(AF_UNIX, SOCK_SEQPACKET): "ok", the errno, or "unsupported" (no constant)."""
    kind = harness.constant("SOCK_SEQPACKET")
    if kind is None:
        return UNSUPPORTED
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
    except OSError as exc:
        return harness.errno_name(exc)
    a.close()
    b.close()
    return OK


def missing():
    """``"unsupported"`` (with the reason) where no seqpacket pair can be made, else None."""
    if support() != OK:
        return Measured(UNSUPPORTED, socketpair=support())
    return None


def seqpacket_pair():
    return socket.socketpair(socket.AF_UNIX, harness.constant("SOCK_SEQPACKET"))


def read(sock, size=64):
    """One bounded recv: the text read, ``"eof"``, ``"blocks"`` or the errno name."""
    got = bounded_recv(sock, lambda: sock.recv(size))
    if isinstance(got, bytes):
        return got.decode() if got else EOF
    return got


@observation("seqpacket.supported")
def supported():
    """socketpair(AF_UNIX, SOCK_SEQPACKET) works (Linux, FreeBSD) or fails (macOS)."""
    return support()


# --- records and truncation ---------------------------------------------------------------

@experiment
def truncation():
    """Records "ABCDE" and "FG"; recv(3), then recv(64): what each returned."""
    a, b = seqpacket_pair()
    with a, b:
        a.send(b"ABCDE")
        a.send(b"FG")
        return {"first": read(b, 3), "second": read(b)}


@observation("seqpacket.truncation.received")
def truncation_received():
    """recv(3) of the record "ABCDE" returns "ABC"."""
    if unsupported := missing():
        return unsupported
    return truncation()["first"]


@observation("seqpacket.truncation.rest_discarded")
def truncation_rest_discarded():
    """After a short read the next read returns the next record "FG", not the lost "DE"."""
    if unsupported := missing():
        return unsupported
    second = truncation()["second"]
    return Measured(second == "FG", next_read=second)


@observation("seqpacket.truncation.msg_trunc_flag")
def truncation_msg_trunc_flag():
    """recvmsg(3) of the record "ABCDE" sets MSG_TRUNC in msg_flags."""
    if unsupported := missing():
        return unsupported
    msg_trunc = harness.constant("MSG_TRUNC")
    a, b = seqpacket_pair()
    with a, b:
        a.send(b"ABCDE")
        got = bounded_recv(b, lambda: b.recvmsg(3))
    if not isinstance(got, tuple):
        raise harness.Unmeasurable(f"recvmsg of a queued record gave {got}")
    data, _, flags, _ = got
    if msg_trunc is None:
        return Measured(UNSUPPORTED, reason="this Python has no socket.MSG_TRUNC")
    return Measured(bool(flags & msg_trunc), received=data.decode(), msg_flags=flags)


@observation("seqpacket.boundaries_preserved")
def boundaries_preserved():
    """Two records "ABC" and "DEF", sent without MSG_EOR, are read back one at a time."""
    if unsupported := missing():
        return unsupported
    a, b = seqpacket_pair()
    with a, b:
        a.send(b"ABC")
        a.send(b"DEF")
        got = read(b)
    return Measured(got == "ABC", read=got)


@observation("seqpacket.msg_eor")
def msg_eor():
    """Sends "AB" (no MSG_EOR), "CD" and "EF" (MSG_EOR): each send reads back as a record.

    FreeBSD 15 ends a record only at MSG_EOR, so there the reads are "ABCD", "EF".  The
    value is what successive recvmsg(64) calls returned, until one would wait.
    """
    if unsupported := missing():
        return unsupported
    msg_eor_flag = harness.constant("MSG_EOR")
    if msg_eor_flag is None:
        return Measured(UNSUPPORTED, reason="this Python has no socket.MSG_EOR")
    a, b = seqpacket_pair()
    with a, b:
        for data, flags in ((b"AB", 0), (b"CD", msg_eor_flag), (b"EF", msg_eor_flag)):
            sent = outcome(a.sendmsg, [data], [], flags)
            if sent != OK:
                return Measured(sent, failed_send=data.decode())
        reads, eor_flags = [], []
        for _ in range(3):
            got = bounded_recv(b, lambda: b.recvmsg(64))
            if not isinstance(got, tuple):
                break
            reads.append(got[0].decode())
            eor_flags.append(bool(got[2] & msg_eor_flag))
    return Measured(reads, msg_eor_on_read=eor_flags)


# --- a peer that has gone ------------------------------------------------------------------

@observation("seqpacket.peer_closed.read")
def peer_closed_read():
    """A read after the peer closed returns end of file."""
    if unsupported := missing():
        return unsupported
    a, b = seqpacket_pair()
    with a:
        b.close()
        return read(a)


def send_to_closed_peer():
    """In the child: send one record to a peer that has closed."""
    a, b = seqpacket_pair()
    b.close()
    with a:
        return outcome(a.send, b"x")


@observation("seqpacket.peer_closed.sigpipe_kills")
def peer_closed_sigpipe_kills():
    """A process with default SIGPIPE handling dies of SIGPIPE sending to a closed peer."""
    if unsupported := missing():
        return unsupported
    result = harness.in_child(send_to_closed_peer, sigpipe_default=True, timeout=CHILD_TIMEOUT)
    if result.error:
        raise harness.Unmeasurable(f"the child failed: {result.error}")
    if result.signal_name == "SIGPIPE":
        return Measured(True, signal="SIGPIPE")
    if result.signal:
        raise harness.Unmeasurable(f"the child died of {result.signal_name}")
    return Measured(False, send=result.value)


if __name__ == "__main__":
    harness.main()
