"""AF_UNIX SOCK_DGRAM: boundaries, truncation, queue capacity, and what a full queue does.

Each observation builds its sockets in its own scratch directory (the harness chdirs
there), so the names below are short relative paths, as in the course example.
"""
import contextlib
import fcntl
import os
import select
import socket
import sys
import termios

from . import harness
from .harness import Measured, bounded_send, errno_name, experiment, observation, outcome


def dgram_socket():
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def dgram_pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


@contextlib.contextmanager
def bound(name):
    """A datagram socket bound to ``name``; the socket file is removed afterwards."""
    sock = dgram_socket()
    try:
        sock.bind(name)
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def fill(send):
    """Call a non-blocking ``send`` until it fails; return (count, errno name of the failure)."""
    count = 0
    while True:
        try:
            send()
        except OSError as exc:
            return count, errno_name(exc)
        count += 1
        if count > 1_000_000:
            raise harness.Unmeasurable("queue never filled after 1,000,000 datagrams")


# --- truncation and boundaries ---------------------------------------------------------

@experiment
def truncation():
    """recv(3) of "ABCDE", then of "FG"; recvmsg and recv(MSG_TRUNC) on the same shape."""
    a, b = dgram_pair()
    with a, b:
        a.send(b"ABCDE")
        a.send(b"FG")
        first = b.recv(3)
        second = b.recv(16)
        a.send(b"ABCDE")
        _, _, flags, _ = b.recvmsg(3)
        a.send(b"ABCDE")
        msg_trunc = harness.constant("MSG_TRUNC")
        with_flag = b.recv_into(bytearray(3), 3, msg_trunc) if msg_trunc else harness.UNSUPPORTED
    return {"first": first.decode(), "second": second.decode(),
            "flag": bool(msg_trunc and flags & msg_trunc), "with_flag": with_flag}


@observation("dgram.truncation.received")
def truncation_received():
    """recv(3) of the datagram "ABCDE" returns "ABC"."""
    return truncation()["first"]


@observation("dgram.truncation.rest_discarded")
def truncation_rest_discarded():
    """After a truncated read the next read returns the next datagram, not the lost "DE"."""
    return truncation()["second"] == "FG"


@observation("dgram.truncation.msg_trunc_flag")
def truncation_msg_trunc_flag():
    """recvmsg sets MSG_TRUNC in msg_flags when it truncates a datagram."""
    return truncation()["flag"]


@observation("dgram.truncation.recv_with_msg_trunc")
def truncation_recv_with_msg_trunc():
    """recv(3, MSG_TRUNC) returns the datagram's real length (5) where the kernel reports it."""
    return truncation()["with_flag"]


@observation("dgram.reliable_in_order")
def reliable_in_order():
    """Every datagram that fits the queue is delivered, once, in the order sent."""
    a, b = dgram_pair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        sent = 0
        while True:
            try:
                a.send(sent.to_bytes(4, "big"))
            except OSError:
                break
            sent += 1
        received = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(int.from_bytes(b.recv(4), "big"))
    return Measured(received == list(range(sent)), sent=sent, received=len(received))


@observation("dgram.zero_length")
def zero_length():
    """A zero-length datagram is delivered: recv returns 0 bytes."""
    a, b = dgram_pair()
    with a, b:
        sent = outcome(a.send, b"")
        if sent != harness.OK:
            return sent
        b.setblocking(False)
        try:
            return len(b.recv(16))
        except OSError as exc:
            return errno_name(exc)


# --- queue capacity and a full queue ---------------------------------------------------------

@observation("dgram.sndbuf_default")
def sndbuf_default():
    """SO_SNDBUF of a fresh datagram socket (bounds what one sender may have queued)."""
    with dgram_socket() as sock:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


@observation("dgram.truesize_small")
def truesize_small():
    """Bytes of send buffer one 1-byte datagram is charged while queued (Linux SIOCOUTQ)."""
    if not sys.platform.startswith("linux"):  # BSD's TIOCOUTQ counts something else
        return harness.UNSUPPORTED
    a, b = dgram_pair()
    with a, b:
        a.send(b"x")
        charged = bytearray(4)
        fcntl.ioctl(a.fileno(), termios.TIOCOUTQ, charged)  # SIOCOUTQ == TIOCOUTQ
        return int.from_bytes(charged, sys.byteorder)


@observation("dgram.queue.capacity_unconnected")
def capacity_unconnected():
    """An unconnected sendto fills the receiver after a fixed number of small datagrams."""
    with bound("r") as receiver, dgram_socket() as sender:
        sender.setblocking(False)
        count, stopped_by = fill(lambda: sender.sendto(b"x", "r"))
        return Measured(count, stopped_by=stopped_by,
                        receiver_rcvbuf=receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


@observation("dgram.queue.capacity_socketpair")
def capacity_socketpair():
    """A socketpair holds a fixed number of small datagrams before the next send fails."""
    a, b = dgram_pair()
    with a, b:
        a.setblocking(False)
        count, stopped_by = fill(lambda: a.send(b"x"))
        return Measured(count, stopped_by=stopped_by)


@contextlib.contextmanager
def full_receiver():
    """A bound receiver whose queue an unconnected sender has just filled."""
    with bound("r"), dgram_socket() as sender:
        sender.setblocking(False)
        count, _ = fill(lambda: sender.sendto(b"x", "r"))
        sender.setblocking(True)
        yield sender, count


@observation("dgram.full.blocking_send")
def full_blocking_send():
    """A blocking sendto into a full receiver waits (Linux) or fails at once (macOS: ENOBUFS)."""
    with full_receiver() as (sender, queued):
        return Measured(bounded_send(sender, lambda: sender.sendto(b"x", "r")),
                        queued=queued, window_s=harness.block_window())


@observation("dgram.full.nonblocking_send")
def full_nonblocking_send():
    """A non-blocking sendto into a full receiver fails: EAGAIN (Linux) or ENOBUFS."""
    with full_receiver() as (sender, _):
        sender.setblocking(False)
        return outcome(sender.sendto, b"x", "r")


def says_writable(sock):
    """Whether poll (select where there is no poll) reports the socket writable right now."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        return bool(poller.poll(0))
    return bool(select.select([], [sock], [], 0)[1])


@observation("dgram.full.poll_writable_unconnected")
def full_poll_writable_unconnected():
    """poll reports an unconnected sender writable although its next sendto would fail."""
    with full_receiver() as (sender, _):
        sender.setblocking(False)
        writable = says_writable(sender)
        return Measured(writable, next_sendto=outcome(sender.sendto, b"x", "r"))


@observation("dgram.full.poll_writable_connected")
def full_poll_writable_connected():
    """poll reports a sender connected to a full receiver not writable (Linux, macOS 13+)."""
    with bound("r"), dgram_socket() as sender:
        sender.connect("r")
        sender.setblocking(False)
        queued, stopped_by = fill(lambda: sender.send(b"x"))
        return Measured(says_writable(sender), queued=queued, stopped_by=stopped_by)


# --- size limits ------------------------------------------------------------------------------

def send_size(a, b, size):
    """Try one datagram of ``size`` bytes on a fresh-buffer pair; drain it if it went."""
    try:
        a.send(bytes(size))
    except OSError as exc:
        return errno_name(exc)
    b.recv(size + 1)
    return harness.OK


@experiment
def size_limit():
    """Largest datagram a fresh socketpair accepts (binary search) and the errno just past it."""
    a, b = dgram_pair()
    with a, b:
        a.setblocking(False)
        largest, past, _ = harness.largest_accepted(lambda size: send_size(a, b, size), 1, 1 << 28)
        return {"max": largest, "past": past,
                "sndbuf": a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)}


@observation("dgram.max_size")
def max_size():
    """The largest datagram a fresh socketpair sends with default buffers."""
    limit = size_limit()
    return Measured(limit["max"], sndbuf=limit["sndbuf"])


@observation("dgram.oversize")
def oversize():
    """One byte past the largest datagram the send fails with EMSGSIZE."""
    return size_limit()["past"]


# --- addresses and dead peers ------------------------------------------------------------------

@observation("dgram.unbound_sender.has_address")
def unbound_sender_has_address():
    """recvfrom names no address for a datagram from an unbound sender, so no reply is possible."""
    with bound("r") as receiver, dgram_socket() as sender:
        sender.sendto(b"x", "r")
        receiver.setblocking(False)
        _, address = receiver.recvfrom(16)
        return Measured(bool(address), address=repr(address))


@observation("dgram.send_to_closed_path")
def send_to_closed_path():
    """sendto a path whose socket was closed (the file remains) is refused."""
    with bound("r") as receiver, dgram_socket() as sender:
        receiver.close()
        sender.setblocking(False)
        return outcome(sender.sendto, b"x", "r")


@observation("dgram.send_to_missing_path")
def send_to_missing_path():
    """sendto a path that does not exist fails with ENOENT."""
    with dgram_socket() as sender:
        sender.setblocking(False)
        return outcome(sender.sendto, b"x", "missing")


@experiment
def connected_peer_closed():
    """Two sends on a socket connected to a receiver that has since closed."""
    with bound("r") as receiver, dgram_socket() as sender:
        sender.connect("r")
        receiver.close()
        sender.setblocking(False)
        return outcome(sender.send, b"x"), outcome(sender.send, b"x")


@observation("dgram.connected_peer_closed.first_send")
def connected_peer_closed_first():
    """The first send after the connected peer closed reports the dead peer."""
    return connected_peer_closed()[0]


@observation("dgram.connected_peer_closed.second_send")
def connected_peer_closed_second():
    """The second send after the connected peer closed: the socket is no longer connected."""
    return connected_peer_closed()[1]


@observation("dgram.sendto_on_connected")
def sendto_on_connected():
    """sendto another path on a connected datagram socket: sent (Linux) or EISCONN."""
    with bound("r"), bound("o") as other, dgram_socket() as sender:
        sender.connect("r")
        sender.setblocking(False)
        result = outcome(sender.sendto, b"x", "o")
        if result == harness.OK:
            other.setblocking(False)
            other.recv(1)  # it really went to the other path
        return result


@observation("dgram.send_unconnected")
def send_unconnected():
    """send() with no destination on a never-connected datagram socket fails."""
    with dgram_socket() as sender:
        sender.setblocking(False)
        return outcome(sender.send, b"x")


if __name__ == "__main__":
    harness.main()
