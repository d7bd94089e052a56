"""TCP and UDP on loopback: the network behaviour unix sockets are sold against.

The course notes: TCP is reliable but "messages may be chopped or coalesced"; UDP keeps
message boundaries but is unreliable.  Every socket here lives on the loopback address
(LOOPBACK, never another host), so nothing leaves the machine.  Each wait is an event:
poll with a timeout, a receive bounded by SO_RCVTIMEO, or a marker datagram that proves
everything sent before it has arrived.
"""
import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import time

from . import harness
from .harness import Measured, bounded_recv, bounded_send, errno_name, experiment, observation

LOOPBACK = "127.0.0.1"            # the only address this family ever binds, connects or sends to
SMALL_RCVBUF = 4096               # asked for; the kernel rounds it (Linux doubles, has a floor)
FLOOD_PAYLOAD = 100               # bytes per datagram when overfilling a receiver
MARKER = b"end-of-flood"


# --- sockets on loopback ---------------------------------------------------------------

def udp_socket():
    """A UDP socket bound to an ephemeral port on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((LOOPBACK, 0))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def udp_pair():
    """A receiver and a sender, both on loopback; yields (receiver, sender, receiver address)."""
    with udp_socket() as receiver, udp_socket() as sender:
        yield receiver, sender, receiver.getsockname()


@contextlib.contextmanager
def tcp_connection(receiver_rcvbuf=None, sender_sndbuf=None):
    """A connected loopback TCP pair (sender, receiver); the listener is closed at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        if receiver_rcvbuf:  # set before listen: accepted sockets inherit it, and the window
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiver_rcvbuf)
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if sender_sndbuf:
                sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sender_sndbuf)
            harness.set_send_timeout(sender, harness.block_window())
            sender.connect(listener.getsockname())  # loopback: the handshake completes here
            if not select.select([listener], [], [], harness.block_window())[0]:
                raise harness.Unmeasurable("loopback connection was not ready to accept")
            receiver, _ = listener.accept()
        except BaseException:
            sender.close()
            raise
    with sender, receiver:
        yield sender, receiver


def wait_readable(sock, at_least):
    """Wait (poll, bounded) until ``at_least`` bytes are queued, using SO_RCVLOWAT.

    A kernel that takes SO_RCVLOWAT but does not apply it to poll (gVisor's netstack under
    load) says readable sooner; FIONREAD then tells whether the rest is still on its way,
    and the wait goes on for it within the same window.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, at_least)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    window = harness.block_window()
    end = time.monotonic() + window
    try:
        while True:
            left_ms = max(0.0, (end - time.monotonic()) * 1000)
            if not poller.poll(left_ms):
                break
            if queued(sock) >= at_least:
                return
            if left_ms == 0:
                break
            os.sched_yield()  # readable, yet short of at_least: the rest is in flight
        raise harness.Unmeasurable(f"{at_least} bytes were not readable within {window * 1000:g} ms")
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def queued(sock):
    """Bytes waiting to be read (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def recv_now(sock, size, flags=0):
    """A receive that never waits: the data is known to be there."""
    return sock.recv(size, flags | socket.MSG_DONTWAIT)


# --- TCP: no boundaries ----------------------------------------------------------------------

@experiment
def tcp_two_sends():
    """send("ABC"), send("DEF"); once all 6 bytes have arrived, one recv(64)."""
    with tcp_connection() as (sender, receiver):
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # two segments, not one
        sender.send(b"ABC")
        sender.send(b"DEF")
        wait_readable(receiver, 6)
        return recv_now(receiver, 64).decode()


@observation("net.tcp.boundaries_preserved")
def tcp_boundaries_preserved():
    """Two TCP sends "ABC", "DEF" are read back as two messages (they are not: one read gets both)."""
    received = tcp_two_sends()
    return Measured(received == "ABC", first_read=received)


@observation("net.tcp.coalesced")
def tcp_coalesced():
    """Once both have arrived, one recv returns "ABCDEF": the two sends were coalesced."""
    return tcp_two_sends() == "ABCDEF"


@observation("net.tcp.chopped")
def tcp_chopped():
    """One send larger than the buffers is taken and read back in pieces, never whole."""
    message = bytes(1 << 18)
    with tcp_connection(receiver_rcvbuf=SMALL_RCVBUF, sender_sndbuf=SMALL_RCVBUF) as (sender, receiver):
        sender.setblocking(False)
        accepted = sender.send(message)
        wait_readable(receiver, 1)
        first_read = len(recv_now(receiver, len(message)))
        return Measured(first_read < len(message), message=len(message),
                        accepted_by_one_send=accepted, first_read=first_read,
                        receiver_rcvbuf=receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


# --- UDP: boundaries and truncation --------------------------------------------------------------

@observation("net.udp.boundaries_preserved")
def udp_boundaries_preserved():
    """Two UDP datagrams "ABC", "DEF" are read back as two messages, one per recv."""
    with udp_pair() as (receiver, sender, address):
        sender.sendto(b"ABC", address)
        sender.sendto(b"DEF", address)
        first = bounded_recv(receiver, lambda: receiver.recv(64))
        second = bounded_recv(receiver, lambda: receiver.recv(64))
        reads = [x.decode() if isinstance(x, bytes) else x for x in (first, second)]
        return Measured(reads == ["ABC", "DEF"], reads=reads)


@experiment
def udp_truncation():
    """recv(3) of "ABCDE"; recvmsg(3) of the same; recv(3, MSG_TRUNC) of the same."""
    with udp_pair() as (receiver, sender, address):
        for _ in range(3):
            sender.sendto(b"ABCDE", address)
        received = bounded_recv(receiver, lambda: receiver.recv(3))
        _, _, flags, _ = receiver.recvmsg(3)
        msg_trunc = harness.constant("MSG_TRUNC")
        if msg_trunc is None:
            return {"received": received.decode(), "flag": harness.UNSUPPORTED,
                    "with_flag": harness.UNSUPPORTED}
        with_flag = receiver.recv_into(bytearray(3), 3, msg_trunc)
        return {"received": received.decode(), "flag": bool(flags & msg_trunc),
                "with_flag": with_flag}


@observation("net.udp.truncation.received")
def udp_truncation_received():
    """recv(3) of the UDP datagram "ABCDE" returns "ABC"."""
    return udp_truncation()["received"]


@observation("net.udp.truncation.msg_trunc_flag")
def udp_truncation_msg_trunc_flag():
    """recvmsg sets MSG_TRUNC in msg_flags when it truncates a UDP datagram."""
    return udp_truncation()["flag"]


@observation("net.udp.truncation.recv_with_msg_trunc")
def udp_truncation_recv_with_msg_trunc():
    """recv(3, MSG_TRUNC) of "ABCDE" returns the real length (5) where the kernel reports it."""
    return udp_truncation()["with_flag"]


def sendto_size(sender, address, size):
    try:
        sender.sendto(bytes(size), address)
    except OSError as exc:
        return errno_name(exc)
    return harness.OK


@experiment
def udp_size_limit():
    """Largest datagram a fresh UDP socket sends to loopback (binary search), and the errno past it."""
    with udp_pair() as (_, sender, address):
        sender.setblocking(False)
        # IPv4 caps a datagram at 65535 bytes with headers: 1 << 17 must be refused.
        largest, past, _ = harness.largest_accepted(
            lambda size: sendto_size(sender, address, size), 1, 1 << 17)
        return {"max": largest, "past": past,
                "sndbuf": sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)}


@observation("net.udp.max_size")
def udp_max_size():
    """The largest UDP datagram a fresh socket sends over IPv4 loopback."""
    limit = udp_size_limit()
    return Measured(limit["max"], sndbuf=limit["sndbuf"])


@observation("net.udp.oversize")
def udp_oversize():
    """One byte past the largest UDP datagram, sendto fails with EMSGSIZE."""
    return udp_size_limit()["past"]


# --- UDP: a full receiver drops, and the sender never waits ----------------------------------------

def drain(receiver):
    """Read every datagram already queued; return how many."""
    count = 0
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while True:
            recv_now(receiver, 65536)
            count += 1
    return count


def wait_for_marker(receiver, sender, address):
    """Count datagrams up to a marker sent after the flood: all earlier ones have then landed.

    Loopback delivers one sender's datagrams in order, so once the marker is read nothing
    sent before it is still in flight, however the platform defers delivery.
    """
    sender.sendto(MARKER, address)
    count = 0
    while True:
        data = bounded_recv(receiver, lambda: receiver.recv(65536))
        if data == MARKER:
            return count
        if not isinstance(data, bytes):
            raise harness.Unmeasurable(f"the marker datagram did not arrive ({data})")
        count += 1


@experiment
def udp_flood():
    """Blocking sendto of many datagrams into a receiver with a small buffer, nobody reading."""
    with udp_pair() as (receiver, sender, address):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        rcvbuf = receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Far more than fit however the kernel accounts a datagram (at least its payload).
        to_send = 4 * rcvbuf // FLOOD_PAYLOAD + 16
        payload = bytes(FLOOD_PAYLOAD)
        outcomes, slowest = [], 0.0
        for _ in range(to_send):
            started = time.monotonic()
            outcomes.append(bounded_send(sender, lambda: sender.sendto(payload, address)))
            slowest = max(slowest, time.monotonic() - started)
        received = drain(receiver)
        received += wait_for_marker(receiver, sender, address)
        return {"sent": sum(o == harness.OK for o in outcomes), "attempted": to_send,
                "received": received, "rcvbuf": rcvbuf, "outcomes": outcomes,
                "slowest_send_ms": round(slowest * 1000, 2)}


@observation("net.udp.full.blocking_send")
def udp_full_blocking_send():
    """A blocking sendto into a UDP receiver that is full does not wait: "ok"."""
    flood = udp_flood()
    if flood["received"] >= flood["attempted"]:
        raise harness.Unmeasurable(f"the receiver took all {flood['attempted']} datagrams; "
                                   f"it never filled")
    into_full = flood["outcomes"][flood["received"]:]  # everything after the queue filled
    worst = next((o for o in into_full if o != harness.OK), harness.OK)
    return Measured(worst, sends_into_full_receiver=len(into_full),
                    slowest_send_ms=flood["slowest_send_ms"], window_s=harness.block_window())


@observation("net.udp.full.lossy")
def udp_full_lossy():
    """More UDP datagrams are sent than a full receiver gets: the rest are silently dropped."""
    flood = udp_flood()
    return Measured(flood["received"] < flood["sent"], sent=flood["sent"],
                    received=flood["received"], receiver_rcvbuf=flood["rcvbuf"],
                    payload=FLOOD_PAYLOAD)


if __name__ == "__main__":
    harness.main()
