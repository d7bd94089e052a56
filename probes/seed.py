"""The course notes' recv-unix / send-unix example, run exactly as the notes run it.

    ./recv-unix 3            a server bound to "serv-dom-sock" that recvfrom()s 3 bytes
                             and sends back "[i](ABC)" to whoever sent them;
    ./send-unix ABCDE 8      a client bound to "clnt-dom-sock.<pid>" that sends all its
                             messages first and only then reads the replies.

With 1000 messages the notes say it gets stuck on Linux: both processes block in
sendto, each waiting for the other to read.  The probe decides "deadlock" from the
processes' state (both inside a blocking call, no progress), not from a long timeout.
Where 1000 complete (gVisor's queues count bytes), it tries 2^17 messages to find the
edge; a run stuck with one program reading and the other sending is a lost wake-up.

A deadlock is a fact about that run's schedule; the edge is a fact about capacity.  The
parent holds the client's socket too, so once both sleep it asks the kernel, with
non-blocking sends from that socket, how many more of the client's messages still fit.
"""
import contextlib
import ctypes
import errno
import mmap
import os
import socket

from . import harness
from ._asleep import kernel_says_sleeping
from .harness import Measured, errno_name, experiment, observation

SERVER_NAME = "serv-dom-sock"
NUM_TO_RECV = 3
MESSAGE = b"ABCDE"
FLOOD = 1000
# Where 1000 messages complete, the search for a deadlock goes on up to this many.
SEARCH_CEILING = 1 << 17

# Where each process is, published in shared memory so the parent can watch it.
RUNNING, IN_RECV, IN_SEND, DONE, FAILED = range(5)


class Board(ctypes.Structure):
    """Counters both children update and the parent reads (MAP_SHARED|MAP_ANON)."""
    _fields_ = [("server_state", ctypes.c_long), ("server_handled", ctypes.c_long),
                ("client_state", ctypes.c_long), ("client_sent", ctypes.c_long),
                ("client_received", ctypes.c_long), ("client_errno", ctypes.c_long),
                ("server_errno", ctypes.c_long),
                ("first_len", ctypes.c_long), ("first", ctypes.c_char * 16),
                ("saw_path", ctypes.c_long)]


def shared_board():
    """A zeroed Board in anonymous memory that forked children share with us."""
    return Board.from_buffer(mmap.mmap(-1, ctypes.sizeof(Board)))


@contextlib.contextmanager
def server_socket():
    """The server's socket, bound before the fork so the client never races the bind."""
    fd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SERVER_NAME)
    try:
        fd.bind(SERVER_NAME)
        yield fd
    finally:
        fd.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SERVER_NAME)


def recv_unix(board, fd):
    """The server: recvfrom(fd, buf, 3), reply "[i](buf)" to the sender, forever."""
    i = 0
    while True:
        board.server_state = IN_RECV
        buf, clnt_un = fd.recvfrom(NUM_TO_RECV)
        if i == 0:
            board.first = buf
            board.first_len = len(buf)
            board.saw_path = int(bool(clnt_un) and clnt_un.startswith("clnt-dom-sock."))
        i += 1
        board.server_state = IN_SEND
        try:
            reply(fd, b"[%d](%s)" % (i, buf), clnt_un)
        except OSError as exc:  # the C server ignores a failed reply; we note the first
            board.server_errno = board.server_errno or exc.errno
        board.server_handled = i
        board.server_state = RUNNING


def reply(fd, message, address):
    """The server's sendto of one reply."""
    fd.sendto(message, address)


def first_failed_sendto(board):
    """The errno of the run's first failed sendto, the client's or the server's, or None."""
    number = board.client_errno or board.server_errno
    return errno_name(number) if number else None


def client_name(pid):
    return f"clnt-dom-sock.{pid}"


def send_unix(board, fd, num_repeat):
    """The client: send every message, then read every reply; stop at the first error.

    ``fd`` is made by the parent (which keeps a copy to measure room in it) and bound
    here to the client's own name, as the C client binds its socket.
    """
    my_name = client_name(os.getpid())
    fd.bind(my_name)
    try:
        for _ in range(num_repeat):
            board.client_state = IN_SEND
            try:
                fd.sendto(MESSAGE, SERVER_NAME)
            except OSError as exc:
                board.client_errno = exc.errno
                board.client_state = FAILED
                return []
            board.client_sent += 1
        replies = []
        # Replies come back at the server's pace; a lost one must not hang the client.
        harness.set_recv_timeout(fd, 2.0)
        for _ in range(num_repeat):
            board.client_state = IN_RECV
            replies.append(fd.recvfrom(100)[0].decode())
            board.client_received += 1
        board.client_state = DONE
        return replies
    finally:
        fd.close()
        os.unlink(my_name)


def stuck(board, pids, previous):
    """Both inside a blocking call, no counter moved since the last look, kernel agrees."""
    now = (board.server_handled, board.client_sent, board.client_received)
    blocked = board.server_state in (IN_RECV, IN_SEND) and board.client_state in (IN_RECV, IN_SEND)
    asleep = [kernel_says_sleeping(pid) for pid in pids]
    return blocked and now == previous and all(s is not False for s in asleep), now


def stuck_outcome(server_state, client_state):
    """What a stuck run is, from where each program sleeps.

    Both in sendto: the notes' deadlock, each waiting for the other to read.  Both in
    recvfrom: replies were dropped (a platform that fails sends instead of blocking
    them) and the client waits for them forever, as the C client would.  One reading
    and one sending: the reader's queue is empty or the sender's has room, so what the
    sleeper waits for has happened and it was never woken: a lost wake-up.
    """
    if server_state == IN_SEND and client_state == IN_SEND:
        return "deadlock"
    if server_state == IN_RECV and client_state == IN_RECV:
        return "replies-lost"
    return "lost-wakeup"


def room_left(fd, at_most):
    """How many more of the client's messages its socket takes without blocking (<= at_most).

    Asked once both programs sleep: a deadlock with room left is one the kernel's wake-up
    rule made (Linux wakes a sender waiting on its send buffer only once three quarters
    of it is free), not one the queues' capacity forces.
    """
    for sent in range(at_most):
        try:
            fd.sendto(MESSAGE, socket.MSG_DONTWAIT, SERVER_NAME)
        except (BlockingIOError, InterruptedError):
            return sent
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return sent
            raise harness.Unmeasurable(f"a non-blocking send from the stuck client's socket "
                                       f"failed with {errno_name(exc.errno)}") from None
    return at_most


def watch(board, server, client, overall):
    """Wait for the client to finish (its ChildResult) or for both to be stuck (the outcome)."""
    window = harness.block_window()
    progress = None
    for _ in range(int(harness.scaled(overall) / window)):
        result = client.wait(window)
        if result is not None:
            return result
        is_stuck, progress = stuck(board, (server.pid, client.pid), progress)
        if is_stuck:
            return stuck_outcome(board.server_state, board.client_state)
    raise harness.Unmeasurable(f"neither finished nor got stuck in {overall:g} s")


def run_example(num_repeat, overall=10.0):
    """Run server and client; return how it ended and what each side saw."""
    board = shared_board()
    with server_socket() as fd, harness.Child(recv_unix, board, fd) as server, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client_fd:
        with harness.Child(send_unix, board, client_fd, num_repeat) as client:
            try:
                result = watch(board, server, client, overall)
                # Read the board now: once the client is killed, the server's blocked
                # reply fails (ECONNREFUSED), and that is our doing, not the example's.
                seen = {"sent": board.client_sent, "received": board.client_received,
                        "server_handled": board.server_handled,
                        "sender_error": first_failed_sendto(board)}
                if result == "deadlock":
                    seen["room"] = room_left(client_fd, num_repeat - board.client_sent)
            finally:
                client.kill()  # a killed client cannot remove its own name
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(client_name(client.pid))
        if isinstance(result, str):  # stuck: deadlock, replies-lost or lost-wakeup
            return {"outcome": result, **seen}
        if result.error:
            raise harness.Unmeasurable(f"client failed: {result.error}")
        return {"outcome": "sender-error" if board.client_errno else "completed", **seen,
                "replies": result.value, "server_received": board.first[:board.first_len].decode(),
                "saw_path": bool(board.saw_path)}


@experiment
def example():
    return run_example(8)


@experiment
def flood():
    return run_example(FLOOD)


@observation("seed.example.server_received")
def example_server_received():
    """The server's recvfrom(fd, buf, 3) of the datagram "ABCDE" gets "ABC"."""
    return example()["server_received"]


@observation("seed.example.replies")
def example_replies():
    """The client reads back 8 replies, "[1](ABC)" to "[8](ABC)", in order."""
    return example()["replies"]


@observation("seed.example.server_saw_client_path")
def example_server_saw_client_path():
    """recvfrom gives the server the client's bound name, so it can reply."""
    return example()["saw_path"]


@observation("seed.flood.outcome")
def flood_outcome():
    """Sending 1000 messages before reading any reply deadlocks (Linux) or fails (macOS)."""
    result = flood()
    return Measured(result["outcome"], sent_before_stop=result["sent"],
                    replies_read=result.get("received", len(result.get("replies") or [])),
                    server_handled=result["server_handled"])


@observation("seed.flood.sender_error")
def flood_sender_error():
    """The errno of the flood's first failed sendto (client's or server's), or null."""
    return flood().get("sender_error")


@observation("seed.flood.deadlock_threshold")
def flood_deadlock_threshold():
    """The smallest message count at which the send-all-then-read client deadlocks.

    That is, the count from which completing is impossible: one more than all the
    messages the queues can hold before both programs block, whatever the schedule.
    """
    first = flood()
    trials = [[FLOOD, first["outcome"]]]
    if not filled_up(first, FLOOD):
        # One run at the ceiling: where it fills the queues, it names the edge.
        count = SEARCH_CEILING
        first = run_example(count, overall=search_bound())
        trials.append([count, first["outcome"]])
    else:
        count = FLOOD
    if not filled_up(first, count):
        return Measured(None, searched_to=trials[-1][0], trials=trials, **room_seen(first))
    # The sends that went through, those the kernel still took, and the one that cannot:
    # no second run of one fewer is needed (under gVisor it cost 2.5 s of sends).
    return Measured(first["sent"] + first["room"] + 1, trials=trials, **room_seen(first))


def filled_up(result, count):
    """The run deadlocked and the client's socket took no more before all ``count`` were in."""
    return result["outcome"] == "deadlock" and result["sent"] + result["room"] < count


def room_seen(result):
    """Where the edge was read from: sends done, and the room the kernel still had."""
    return {"stuck_after": result["sent"], "room": result["room"]} if "room" in result else {}


def search_bound():
    """Seconds one long trial may take: two of them fit the observation's budget."""
    return max(harness.block_window() * 10, float(os.environ.get(harness.ENV_BUDGET, "10")) * 0.45)


if __name__ == "__main__":
    harness.main()
