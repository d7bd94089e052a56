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
import time

from . import _bulk, harness
from ._asleep import wait_until_asleep
from .harness import BLOCKS, Measured, bounded_send, errno_name, experiment, observation, outcome


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


@experiment
def socketpair_queue():
    """Fill a socketpair with numbered one-byte datagrams, then read every one back."""
    a, b = dgram_pair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        sent, stopped_by = _bulk.fill(a)
        received = _bulk.drain(b)
    return {"sent": sent, "stopped_by": stopped_by, "received": len(received),
            "in_order": len(received) == sent and _bulk.in_pattern(received)}


@observation("dgram.reliable_in_order")
def reliable_in_order():
    """Every datagram that fits the queue is delivered, once, in the order sent."""
    queue = socketpair_queue()
    return Measured(queue["in_order"], sent=queue["sent"], received=queue["received"])


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


def queued_bytes(sock, request):
    """The int an ioctl such as FIONREAD or TIOCOUTQ reports, or its errno (an old kernel)."""
    answer = bytearray(4)
    try:
        fcntl.ioctl(sock.fileno(), request, answer)
    except OSError as exc:
        return errno_name(exc)
    return int.from_bytes(answer, sys.byteorder, signed=True)


@observation("dgram.truesize_small")
def truesize_small():
    """Bytes of send buffer one 1-byte datagram is charged while queued (Linux SIOCOUTQ)."""
    if not sys.platform.startswith("linux"):  # BSD's TIOCOUTQ counts something else
        return harness.UNSUPPORTED
    a, b = dgram_pair()
    with a, b:
        a.send(b"x")
        return queued_bytes(a, termios.TIOCOUTQ)  # SIOCOUTQ == TIOCOUTQ


def says_writable(sock):
    """Whether poll (select where there is no poll) reports the socket writable right now."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        return bool(poller.poll(0))
    return bool(select.select([], [sock], [], 0)[1])


@experiment
def full_receiver():
    """One receiver filled by an unconnected sender, and every question a full queue answers.

    The queue is filled once (its capacity can be 212,992 datagrams), then asked what
    leaves it full first (a non-blocking send, poll, a bounded blocking send), and last
    whether a blocked sender is woken when the receiver drains it.
    """
    with bound("r") as receiver, dgram_socket() as sender:
        sender.setblocking(False)
        capacity = fill_receiver(receiver, sender)
        receiver.setblocking(False)
        answers = {"capacity": capacity, "queued": capacity.value,
                   "nonblocking": outcome(sender.sendto, b"x", "r"),
                   "writable": says_writable(sender),
                   "next_sendto": outcome(sender.sendto, b"x", "r")}
        sender.setblocking(True)
        answers["blocking"] = bounded_send(sender, lambda: sender.sendto(b"x", "r"))
        answers["wake"] = wake_on_drain(sender, receiver)
        return answers


def fill_receiver(receiver, sender):
    """Fill the receiver bound to "r" from the unconnected, non-blocking ``sender``."""
    started = time.monotonic()
    queued, stopped_by = _bulk.fill(sender, "r")
    return Measured(queued, stopped_by=stopped_by, fill_s=round(time.monotonic() - started, 3),
                    receiver_rcvbuf=receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def count_unconnected():
    """dgram.queue.capacity_unconnected measured alone, on sockets of its own: for a family
    that needs only the count (netns, in a new network namespace), without the questions
    full_receiver asks of the full queue afterwards."""
    with bound("r") as receiver, dgram_socket() as sender:
        sender.setblocking(False)
        return fill_receiver(receiver, sender)


def blocked_sendto(sender, bound_s):
    """In a child: one blocking sendto into the full receiver, bounded by SO_SNDTIMEO."""
    return bounded_send(sender, lambda: sender.sendto(b"x", "r"), window=bound_s)


def wake_on_drain(sender, receiver):
    """Block a sender on the full queue, drain the queue, and see whether the sender returns.

    The sender is a child so that one never woken can be killed at the bound instead of
    waiting out its own timeout.  ``soon`` is two block windows after the drain.
    """
    window = harness.block_window()
    soon = 2 * window
    with harness.Child(blocked_sendto, sender, 60 * soon) as child:
        seen_asleep = wait_until_asleep(child.pid, window)
        early = child.wait(0 if seen_asleep else window)
        if early is not None:  # a platform that fails the send instead (macOS: ENOBUFS)
            if early.error:
                raise harness.Unmeasurable(f"the blocking sender failed: {early.error}")
            return Measured(early.value, blocked=False)
        started = time.monotonic()
        drained = len(_bulk.drain(receiver))
        drained_at = time.monotonic()
        result = child.wait(soon)
        waited = time.monotonic() - drained_at
    if result is None:
        return Measured(BLOCKS, drained=drained, drain_s=round(drained_at - started, 3),
                        waited_s=round(waited, 3), bound_s=soon)
    if result.error:
        raise harness.Unmeasurable(f"the blocked sender failed: {result.error}")
    return Measured(result.value, drained=drained, drain_s=round(drained_at - started, 3),
                    returned_after_drain_s=round(waited, 3))


@observation("dgram.queue.capacity_unconnected")
def capacity_unconnected():
    """An unconnected sendto fills the receiver after a fixed number of small datagrams."""
    return full_receiver()["capacity"]


@observation("dgram.queue.capacity_socketpair")
def capacity_socketpair():
    """A socketpair holds a fixed number of small datagrams before the next send fails."""
    queue = socketpair_queue()
    return Measured(queue["sent"], stopped_by=queue["stopped_by"])


@observation("dgram.full.blocking_send")
def full_blocking_send():
    """A blocking sendto into a full receiver waits (Linux) or fails at once (macOS: ENOBUFS)."""
    full = full_receiver()
    return Measured(full["blocking"], queued=full["queued"], window_s=harness.block_window())


@observation("dgram.full.nonblocking_send")
def full_nonblocking_send():
    """A non-blocking sendto into a full receiver fails: EAGAIN (Linux) or ENOBUFS."""
    return full_receiver()["nonblocking"]


@observation("dgram.full.poll_writable_unconnected")
def full_poll_writable_unconnected():
    """poll reports an unconnected sender writable although its next sendto would fail."""
    full = full_receiver()
    return Measured(full["writable"], next_sendto=full["next_sendto"])


@observation("dgram.full.poll_writable_connected")
def full_poll_writable_connected():
    """poll reports a sender connected to a full receiver not writable (Linux, macOS 13+)."""
    with bound("r"), dgram_socket() as sender:
        sender.connect("r")
        sender.setblocking(False)
        queued, stopped_by = _bulk.fill(sender)
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


# --- added with the second set of issues ---------------------------------------------------------

@observation("dgram.full.wakes_on_drain")
def full_wakes_on_drain():
    """A sender blocked on a full receiver returns soon after the receiver drains ("ok")."""
    return full_receiver()["wake"]


@observation("dgram.fionread")
def fionread():
    """FIONREAD on a socket holding datagrams of 3 and 5 bytes: the first's size (Linux) or all."""
    request = harness.constant("FIONREAD", termios)
    if request is None:
        return harness.UNSUPPORTED
    a, b = dgram_pair()
    with a, b:
        a.send(b"abc")
        a.send(b"defgh")
        return queued_bytes(b, request)


@observation("dgram.msg_peek_truncated")
def msg_peek_truncated():
    """recv(2, MSG_PEEK) of "ABCDE" returns "AB" and leaves the datagram whole for the next read."""
    a, b = dgram_pair()
    with a, b:
        a.send(b"ABCDE")
        peeked = b.recv(2, socket.MSG_PEEK)
        b.setblocking(False)
        then = b.recv(16)
    return Measured(peeked == b"AB" and then == b"ABCDE", peeked=peeked.decode(), then=then.decode())


if __name__ == "__main__":
    harness.main()
