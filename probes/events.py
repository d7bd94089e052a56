"""Readiness events: what poll, select, epoll and kqueue report when the other end of a
FIFO or a unix stream goes away, and whether a waiter already blocked is woken.

    struct pollfd p = { fd, POLLIN | POLLRDHUP, 0 };
    poll(&p, 1, timeout);            /* woken when the last writer closes? */
    EV_SET(&ev, fd, EVFILT_READ, EV_ADD, 0, 0, 0);
    kevent(kq, &ev, 1, &out, 1, &timeout);      /* EV_EOF set? */

Every mechanism this platform has is asked the same question: ``poll`` and ``select``
everywhere, ``epoll`` on Linux, ``kqueue`` on macOS and FreeBSD (each is looked up at
call time, so IPCMATRIX_HIDE=select.epoll makes a Linux run take the BSD shape).

The values share one JSON shape, a sorted list with one string per mechanism:

    ["epoll:EPOLLHUP|EPOLLIN", "poll:POLLHUP|POLLIN", "select:readable"]

``<mechanism>:<flags>``: the flags reported, sorted and joined by ``|`` (``none`` when the
wait returned nothing at once).  kqueue names each event as ``<filter>+<flag>...``
(``EVFILT_READ+EV_EOF``); select names the sets the fd was in (``readable``,
``writable``, ``exceptional``); a mechanism that refuses the fd gives its errno, and a
kqueue filter refused at registration ``<filter>+EV_ERROR(<errno>)``.  A waiter blocked
before the event that is still waiting when its bound runs out is ``<mechanism>:blocks``;
one whose wait ended before the event is ``<mechanism>:returned-before-the-event:<flags>``.
Keys that look at two cases prefix each string with the case (``clean/poll:...``).

A "blocked waiter" runs in a forked child: it tells the parent it is about to wait,
waits with its own bounded timeout, and reports what woke it; the parent lets it block
for one block window before making the event happen, so it is asleep in the kernel
when the event comes.  Every wait is bounded; there are no sleeps.
"""
import contextlib
import os
import select
import socket
import time

from . import harness
from .harness import BLOCKS, Measured, observation
from .stream import listening, stream_pair

NAME = "f"
WAKE_WINDOWS = 10    # a woken waiter returns at once; one not woken waits this many windows

POLL_FLAGS = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDHUP",
              "POLLRDNORM", "POLLRDBAND", "POLLWRNORM", "POLLWRBAND")
EPOLL_FLAGS = ("EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLERR", "EPOLLHUP", "EPOLLRDHUP",
               "EPOLLRDNORM", "EPOLLRDBAND", "EPOLLWRNORM", "EPOLLWRBAND")
KQUEUE_FLAGS = ("EV_EOF", "EV_ERROR")


def wake_bound():
    """How long after the event a waiter still blocked is taken to be ``blocks``."""
    return WAKE_WINDOWS * harness.block_window()


def waiter_bound():
    """How long a waiter's own wait may last: far past the event (the parent decides
    ``blocks`` and kills it), so a parent slow to act (starting the other waiters on a
    busy gVisor) never finds it already given up."""
    return 10 * wake_bound()


def flag_names(mask, names):
    """The names in ``names`` (select module constants) whose bits are set in ``mask``."""
    found = []
    for name in names:
        bit = harness.constant(name, select)
        if bit and mask & bit == bit and name not in found:
            found.append(name)
    return found


# --- one bounded wait per mechanism --------------------------------------------------------

def poll_wait(fd, write, timeout):
    bits = 0
    for name in ("POLLIN", "POLLPRI", "POLLRDHUP") + (("POLLOUT",) if write else ()):
        bits |= harness.constant(name, select) or 0
    poller = select.poll()
    poller.register(fd, bits)
    return [name for _, mask in poller.poll(timeout * 1000)
            for name in flag_names(mask, POLL_FLAGS)]


def epoll_wait(fd, write, timeout):
    bits = 0
    for name in ("EPOLLIN", "EPOLLPRI", "EPOLLRDHUP") + (("EPOLLOUT",) if write else ()):
        bits |= harness.constant(name, select) or 0
    with select.epoll() as poller:
        poller.register(fd, bits)
        return [name for _, mask in poller.poll(timeout) for name in flag_names(mask, EPOLL_FLAGS)]


def kqueue_wait(fd, write, timeout):
    filters = [select.KQ_FILTER_READ] + ([select.KQ_FILTER_WRITE] if write else [])
    changes = [select.kevent(fd, kind, select.KQ_EV_ADD) for kind in filters]
    names = {select.KQ_FILTER_READ: "EVFILT_READ", select.KQ_FILTER_WRITE: "EVFILT_WRITE"}
    queue = select.kqueue()
    try:
        events = queue.control(changes, len(changes), timeout)
    finally:
        queue.close()
    found = []
    for event in events:
        flags = [name for name in KQUEUE_FLAGS
                 if event.flags & getattr(select, "KQ_" + name, 0)]
        if "EV_ERROR" in flags:    # a filter refused at registration: data is its errno
            flags[flags.index("EV_ERROR")] = f"EV_ERROR({harness.errno_name(event.data)})"
        found.append("+".join([names.get(event.filter, str(event.filter))] + flags))
    return found


def select_wait(fd, write, timeout):
    readable, writable, exceptional = select.select([fd], [fd] if write else [], [fd], timeout)
    return [name for name, ready in (("readable", readable), ("writable", writable),
                                     ("exceptional", exceptional)) if ready]


WAITS = {"epoll": epoll_wait, "kqueue": kqueue_wait, "poll": poll_wait, "select": select_wait}


def mechanisms():
    """The readiness mechanisms this platform (as Python exposes it) has, by name."""
    return [name for name in WAITS if harness.constant(name, select) is not None]


def wait(mechanism, fd, write, timeout):
    """One mechanism's bounded wait: the flag names, or ``[errno]`` where it refused the fd
    (poll on a macOS device, kqueue on a descriptor it cannot watch)."""
    try:
        return WAITS[mechanism](fd, write, timeout)
    except OSError as exc:
        return [harness.errno_name(exc)]


def report(mechanism, flags):
    """``poll:POLLHUP|POLLIN``: one mechanism's answer in the documented shape."""
    return f"{mechanism}:{'|'.join(sorted(flags)) or 'none'}"


def snapshot(fd, write=True):
    """What every mechanism reports for ``fd`` right now (a zero timeout each)."""
    return sorted(report(m, wait(m, fd, write, 0)) for m in mechanisms())


# --- a waiter blocked before the event ------------------------------------------------------

def _say_ready_then(ready_w, close, fn, *args):
    """In the child: close what it must not hold, tell the parent it is about to wait, run."""
    for fd in close:
        os.close(fd)
    os.write(ready_w, b"!")
    os.close(ready_w)
    return fn(*args)


@contextlib.contextmanager
def started_child(fn, *args, close_in_child=()):
    """A harness.Child running ``fn(*args)``, yielded once it says it is about to wait."""
    ready_r, ready_w = os.pipe()
    try:
        with harness.Child(_say_ready_then, ready_w, [ready_r, *close_in_child], fn, *args) \
                as child:
            os.close(ready_w)
            ready_w = None
            if not select.select([ready_r], [], [], wake_bound())[0]:
                raise harness.Unmeasurable(f"{fn.__name__} never started in its child")
            yield child
    finally:
        os.close(ready_r)
        if ready_w is not None:
            os.close(ready_w)


def timed_wait(mechanism, fd):
    """The waiter's part: one read-interest wait, what ended it, and when.

    The time is CLOCK_MONOTONIC, which every process shares, so the parent can tell a
    wait that ended before the event from one the event ended.
    """
    flags = wait(mechanism, fd, False, waiter_bound())
    return {"flags": flags, "at": time.monotonic()}


@contextlib.contextmanager
def blocked_waiters(fd, close_first=()):
    """One child per mechanism, each blocked in a read-interest wait on ``fd``.

    ``close_first``: fds the children must close (a FIFO's write end, say: a waiter that
    kept a copy would itself be a writer).  Yields a function that, called after the
    event, collects each child's answer in the documented shape.
    """
    with contextlib.ExitStack() as stack:
        waiters = [(mechanism, stack.enter_context(
                        started_child(timed_wait, mechanism, fd, close_in_child=close_first)))
                   for mechanism in mechanisms()]
        # One window for all of them to reach the kernel and sleep, spent waiting on the
        # children themselves (one that returns now was never blocked).
        results = {}
        window_ends = time.monotonic() + harness.block_window()
        for mechanism, child in waiters:
            left = window_ends - time.monotonic()
            if left > 0:
                results[mechanism] = child.wait(left)
        before_event = time.monotonic()

        def collect():
            answers = []
            for mechanism, child in waiters:
                result = results.get(mechanism) or child.wait(wake_bound())
                if result is None:  # alive, said it was about to wait, and not woken
                    answers.append(f"{mechanism}:{BLOCKS}")
                    continue
                if result.error:
                    raise harness.Unmeasurable(f"the {mechanism} waiter failed: {result.error}")
                flags, returned_at = result.value["flags"], result.value["at"]
                if returned_at < before_event and not flags:
                    raise harness.Unmeasurable(
                        f"the {mechanism} waiter's {waiter_bound():g} s ran out before the event "
                        f"could happen: too slow a machine for this window (raise "
                        f"--timeout-multiplier)")
                if returned_at < before_event:
                    answers.append(f"{mechanism}:returned-before-the-event:"
                                   f"{'|'.join(sorted(flags)) or 'none'}")
                elif flags:
                    answers.append(report(mechanism, flags))
                else:
                    answers.append(f"{mechanism}:{BLOCKS}")
            return sorted(answers)

        yield collect


# --- FIFOs ------------------------------------------------------------------------------------

@contextlib.contextmanager
def fifo_ends():
    """mkfifo, then a non-blocking reader and a writer on it: (read_fd, write_fd)."""
    os.mkfifo(NAME, 0o600)
    fds = []
    try:
        fds.append(os.open(NAME, os.O_RDONLY | os.O_NONBLOCK))
        fds.append(os.open(NAME, os.O_WRONLY | os.O_NONBLOCK))
        yield fds[0], fds[1]
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.unlink(NAME)


@observation("fifo.events.last_writer_closed")
def fifo_last_writer_closed():
    """A reader blocked waiting on an empty FIFO is woken when the last writer closes.

    Per mechanism: what woke the waiter (POLLHUP on Linux), or ``blocks`` where the
    close reports nothing (macOS kqueue is expected to, golang/go#63937).
    """
    with fifo_ends() as (reader, writer):
        with blocked_waiters(reader, close_first=[writer]) as collect:
            os.close(writer)
            woke = collect()
        return Measured(woke, after=snapshot(reader, write=False))


@observation("fifo.events.write_end_readable")
def fifo_write_end_readable():
    """The write end of a FIFO polls readable while unread data sits in it (macOS: yes).

    Per mechanism, what a zero-timeout wait for reading and writing reports on the write
    end; ``POLLIN`` or ``readable`` there is what made asyncio close write transports.
    """
    with fifo_ends() as (reader, writer):
        os.write(writer, b"unread")
        return Measured(snapshot(writer), read_end=snapshot(reader, write=False))


# --- unix streams -----------------------------------------------------------------------------

@observation("stream.events.peer_closed")
def stream_peer_closed():
    """What each mechanism tells the survivor of a unix stream pair once its peer closed.

    Two cases: nothing unread anywhere (``clean/``), and the peer closed with data it had
    not read (``unread/``: Linux adds POLLERR, for the ECONNRESET the next read gets).
    """
    answers = []
    for case, unread in (("clean", False), ("unread", True)):
        survivor, peer = stream_pair()
        with survivor, peer:
            if unread:
                survivor.send(b"never read")
            peer.close()
            answers.extend(f"{case}/{item}" for item in snapshot(survivor.fileno()))
    return sorted(answers)


@observation("stream.events.peer_shutdown_wr")
def stream_peer_shutdown_wr():
    """A waiter blocked reading a unix stream wakes at its peer's shutdown(SHUT_WR).

    Per mechanism, what woke it (POLLIN, POLLRDHUP, EV_EOF...), or ``blocks`` if nothing did.
    """
    survivor, peer = stream_pair()
    with survivor, peer:
        with blocked_waiters(survivor.fileno()) as collect:
            peer.shutdown(socket.SHUT_WR)
            woke = collect()
        return Measured(woke, after=snapshot(survivor.fileno()))


# --- listeners ----------------------------------------------------------------------------------

def accept_once(sock):
    """The accepting child's part: one blocking accept(); "ok" or the errno."""
    try:
        conn, _ = sock.accept()
    except OSError as exc:
        return harness.errno_name(exc)
    conn.close()
    return harness.OK


@observation("stream.listener.shutdown")
def listener_shutdown():
    """shutdown(SHUT_RDWR) on a listener: what it returns, and how a blocked accept() ends.

    ``[shutdown's outcome, accept's]``, the accept blocked in another process before the
    shutdown (Linux ["ok", "EINVAL"]; FreeBSD ["ENOTCONN", "ECONNABORTED"]; ``blocks``
    where the accept is not woken).
    """
    with listening("l") as sock:
        sock.setblocking(True)
        with started_child(accept_once, sock) as child:
            early = child.wait(harness.block_window())
            if early is not None:
                raise harness.Unmeasurable(f"accept returned with nobody connecting: "
                                           f"{early.value or early.error}")
            shut = harness.outcome(sock.shutdown, socket.SHUT_RDWR)
            ended = child.wait(wake_bound())
            accepted = BLOCKS if ended is None else (ended.value or ended.error)
        return Measured([shut, accepted], wake_bound_s=wake_bound())


@observation("stream.listener_closed.pending_read")
def listener_closed_pending_read():
    """A client whose listener closed without accepting it: its first read and first write.

    ``[read, write]`` (Linux ["ECONNRESET", "EPIPE"]).
    """
    with listening("l") as sock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect("l")
        sock.close()
        first_read = harness.bounded_recv(client, lambda: client.recv(16))
        if isinstance(first_read, bytes):
            first_read = first_read.decode() if first_read else harness.EOF
        first_write = harness.outcome(client.send, b"x")
        return Measured([first_read, first_write], after=snapshot(client.fileno()))


if __name__ == "__main__":
    harness.main()
