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
"""
import contextlib
import ctypes
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


def send_unix(board, num_repeat):
    """The client: send every message, then read every reply; stop at the first error."""
    my_name = f"clnt-dom-sock.{os.getpid()}"
    fd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
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
    with server_socket() as fd, harness.Child(recv_unix, board, fd) as server:
        with harness.Child(send_unix, board, num_repeat) as client:
            try:
                result = watch(board, server, client, overall)
                # Read the board now: once the client is killed, the server's blocked
                # reply fails (ECONNREFUSED), and that is our doing, not the example's.
                seen = {"sent": board.client_sent, "received": board.client_received,
                        "server_handled": board.server_handled,
                        "sender_error": first_failed_sendto(board)}
            finally:
                client.kill()  # a killed client cannot remove its own name
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"clnt-dom-sock.{client.pid}")
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
    """The smallest message count at which the send-all-then-read client deadlocks."""
    first = flood()
    trials = [[FLOOD, first["outcome"]]]
    if first["outcome"] == "completed":
        # One run at the ceiling: where it deadlocks, it does so at the same send as any
        # count above the edge would, so it names the candidate.
        first = run_example(SEARCH_CEILING, overall=search_bound())
        trials.append([SEARCH_CEILING, first["outcome"]])
    if first["outcome"] != "deadlock":
        return Measured(None, searched_to=trials[-1][0], trials=trials)
    return Measured(sharp_edge(first["sent"] + 1, trials), trials=trials)


def search_bound():
    """Seconds one long trial may take: two of them fit the observation's budget."""
    return max(harness.block_window() * 10, float(os.environ.get(harness.ENV_BUDGET, "10")) * 0.45)


def sharp_edge(candidate, trials):
    """The count at which the client deadlocks while one message fewer does not.

    The stuck run blocked on send number ``candidate``; a run of exactly that many is tried
    as well, since it need not stick there: where a sender waits on its own send buffer,
    Linux wakes it only once half of that buffer is free, so a longer run may stick a send
    or two below the edge (at max_dgram_qlen 512 the 1000-message flood sticks at 557, and
    557 messages complete).  The search only moves up from there, and a trial below the
    edge that sticks is repeated, never taken as the edge.
    """
    for _ in range(6):
        at = run_example(candidate, search_bound())["outcome"]
        trials.append([candidate, at])
        if at != "deadlock":
            candidate += 1
            continue
        below = run_example(candidate - 1, search_bound())["outcome"]
        trials.append([candidate - 1, below])
        if below != "deadlock":
            return candidate
    raise harness.Unmeasurable(f"no sharp edge in {len(trials)} trials: {trials}")


if __name__ == "__main__":
    harness.main()
