"""Filling and draining a datagram queue many datagrams per system call.

How many one-byte datagrams a queue holds is a platform's capacity: 11 on Linux with
max_dgram_qlen 10, 212,992 on gVisor, whose queue counts bytes.  Sending them one
``send`` at a time costs a system call each (42 µs under gVisor: 9 s per fill), so
``fill`` and ``drain`` hand the kernel batches through sendmmsg/recvmmsg (Linux 3.0,
glibc 2.14; FreeBSD 11), and fall back to one call per datagram where the C library
has neither (macOS, whose queues hold a few hundred at most) or the kernel answers
ENOSYS.  Both are bounded in
count and in time, and end in a clear error when the bound is reached.

Datagram ``i`` of a fill carries the byte ``i % 256``, so a drain can tell whether the
queue kept them all, once each, in order.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import struct
import sys
import time

from . import _libc
from .harness import ENV_BUDGET, Unmeasurable, errno_name

BATCH = 1024                 # datagrams per sendmmsg/recvmmsg
MAX_DATAGRAMS = 1 << 22      # more than any queue we know of holds (gVisor: 212,992)
PATTERN = bytes(range(256)) * (BATCH // 256 + 1)
DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)   # the sockets are non-blocking too


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    """struct msghdr of LP64 Linux, FreeBSD and macOS: the same field order and widths."""
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint),
                ("msg_iov", ctypes.POINTER(Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


def time_bound():
    """Seconds a fill or drain may take: half the observation's budget (it scales with it)."""
    return float(os.environ.get(ENV_BUDGET, "10")) / 2


def sockaddr_un(path):
    """The C sockaddr_un for ``path``: BSDs (macOS, FreeBSD) start it with a length byte."""
    name = os.fsencode(path) + b"\0"
    if sys.platform.startswith(("darwin", "freebsd")):
        return struct.pack("BB", 2 + len(name), socket.AF_UNIX) + name
    return struct.pack("@H", socket.AF_UNIX) + name


class Batch:
    """BATCH message headers, each over one byte of ``buffer`` (and one address, if any)."""

    def __init__(self, buffer, address=None):
        self.buffer = buffer
        self.iovecs = (Iovec * BATCH)()
        self.messages = (Mmsghdr * BATCH)()
        self.address = ctypes.create_string_buffer(sockaddr_un(address)) if address else None
        base = ctypes.addressof(buffer)
        for i in range(BATCH):
            self.iovecs[i].iov_base, self.iovecs[i].iov_len = base + i, 1
            header = self.messages[i].msg_hdr
            header.msg_iov, header.msg_iovlen = ctypes.pointer(self.iovecs[i]), 1
            if self.address is not None:
                header.msg_name = ctypes.addressof(self.address)
                header.msg_namelen = len(self.address.raw) - 1

    def shift(self, start):
        """Point the batch at the pattern from ``start`` on (datagram numbers go on)."""
        base = ctypes.addressof(self.buffer) + start % 256
        for i in range(BATCH):
            self.iovecs[i].iov_base = base + i


@functools.cache
def _own_symbols():
    """The C library this process already has loaded: no search (find_library runs
    ldconfig, a fork and exec that costs a tenth of a second under gVisor)."""
    return ctypes.CDLL(None, use_errno=True)


def _mmsg(name):
    """sendmmsg or recvmmsg, or None where the C library lacks it (or a test says it does)."""
    if name in _libc.missing_by_request():
        return None
    function = getattr(_own_symbols(), name, None)
    if function is not None:
        function.restype = ctypes.c_int
    return function


def fill(sock, address=None, limit=MAX_DATAGRAMS, seconds=None):
    """Send one-byte datagrams on a non-blocking ``sock`` until a send fails.

    Returns (datagrams queued, errno name of the failure).  ``address`` makes every
    datagram a sendto to that path.  Raises Unmeasurable when ``limit`` datagrams or
    ``seconds`` pass with the queue still accepting.
    """
    seconds = time_bound() if seconds is None else seconds
    sendmmsg = _mmsg("sendmmsg")
    if sendmmsg is None:
        return _fill_one_by_one(sock, address, limit, seconds)
    batch = Batch(ctypes.create_string_buffer(PATTERN, len(PATTERN)), address)
    end, count = time.monotonic() + seconds, 0
    while count < limit and time.monotonic() < end:
        if count % 256:  # a short batch went before: realign the numbering
            batch.shift(count)
        sent = sendmmsg(sock.fileno(), batch.messages, min(BATCH, limit - count), DONTWAIT)
        if sent < 0:
            number = ctypes.get_errno()
            if number == errno.ENOSYS:  # the C library has it, the kernel does not
                return _fill_one_by_one(sock, address, limit - count, end - time.monotonic(), count)
            return count, errno_name(number)
        count += sent
    raise _still_accepting(count, seconds)


def _fill_one_by_one(sock, address, limit, seconds, count=0):
    end, limit = time.monotonic() + seconds, limit + count
    while count < limit and (count % 256 or time.monotonic() < end):
        try:
            if address is None:
                sock.send(PATTERN[count % 256:count % 256 + 1])
            else:
                sock.sendto(PATTERN[count % 256:count % 256 + 1], address)
        except OSError as exc:
            return count, errno_name(exc)
        count += 1
    raise _still_accepting(count, seconds)


def _still_accepting(count, seconds):
    return Unmeasurable(f"the queue still accepted datagrams after {count:,} of them "
                        f"(bounds: {MAX_DATAGRAMS:,} datagrams, {seconds:g} s)")


def drain(sock, limit=MAX_DATAGRAMS, seconds=None):
    """Read every datagram queued on a non-blocking ``sock``; the first byte of each, in order.

    Ends at the first read that finds the queue empty; raises Unmeasurable past the bounds.
    """
    seconds = time_bound() if seconds is None else seconds
    recvmmsg = _mmsg("recvmmsg")
    if recvmmsg is None:
        return _drain_one_by_one(sock, limit, seconds)
    buffer = ctypes.create_string_buffer(BATCH)
    batch = Batch(buffer)
    received, end = bytearray(), time.monotonic() + seconds
    while len(received) < limit and time.monotonic() < end:
        got = recvmmsg(sock.fileno(), batch.messages, BATCH, DONTWAIT, None)
        if got < 0 and ctypes.get_errno() == errno.ENOSYS:
            return bytes(received) + _drain_one_by_one(sock, limit - len(received), end - time.monotonic())
        if got <= 0:
            return bytes(received)
        received += buffer.raw[:got]  # message i's one byte lands at buffer[i]
    raise Unmeasurable(f"the queue still held datagrams after {len(received):,} were read "
                       f"(bounds: {limit:,} datagrams, {seconds:g} s)")


def _drain_one_by_one(sock, limit, seconds):
    received, end = bytearray(), time.monotonic() + seconds
    while len(received) < limit and time.monotonic() < end:
        try:
            data = sock.recv(1)
        except OSError:
            return bytes(received)
        received += data[:1] or b"\0"
    raise Unmeasurable(f"the queue still held datagrams after {len(received):,} were read "
                       f"(bounds: {limit:,} datagrams, {seconds:g} s)")


def in_pattern(received):
    """Whether ``received`` is datagrams 0, 1, 2... of a fill, each once, in order."""
    whole, rest = divmod(len(received), 256)
    return received == PATTERN[:256] * whole + PATTERN[:rest]
