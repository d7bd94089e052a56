"""What every probe family shares: declaring observations, naming outcomes, bounding waits.

A family module declares each observation as a small function:

    @observation("dgram.zero_length")
    def zero_length():
        '''A zero-length datagram is delivered and recv returns 0.'''
        ...
        return len(data)

and ends with ``if __name__ == "__main__": harness.main()``.  ``main`` runs every
observation in its own scratch directory, under its own deadline, and prints one JSON
document: ``{"family", "observations": {key: {"value", "detail"} | {"error"}}, ...}``.
An observation that raises is reported as an error; the others still run.

Standard library only: probes must run on any Python 3.11 with nothing installed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import struct
import sys
import time

# Environment the runner passes in; every one has a sensible default for a standalone run.
ENV_WORKDIR = "IPCMATRIX_WORKDIR"          # private 0700 directory to work in
ENV_PROGRESS = "IPCMATRIX_PROGRESS"        # file to append each finished key to (JSON lines)
ENV_BLOCK_WINDOW = "IPCMATRIX_BLOCK_WINDOW"  # seconds a call may wait before we call it "blocks"
ENV_BUDGET = "IPCMATRIX_OBSERVATION_BUDGET"  # seconds one observation may take in all
ENV_HIDE = "IPCMATRIX_HIDE"                # comma list of module.CONSTANT to hide (tests of other OSes)
ENV_ONLY = "IPCMATRIX_ONLY"                # comma list of keys to run (default: all)
ENV_MULTIPLIER = "IPCMATRIX_TIMEOUT_MULTIPLIER"  # every window, timeout and budget is scaled by it

BLOCKS = "blocks"
OK = "ok"
UNSUPPORTED = "unsupported"
REFUSED_BY_PYTHON = "refused-by-python"
EOF = "eof"


# --- declaring observations ---------------------------------------------------------

def observation(key):
    """Mark a function as the probe for one observation key; its docstring is the claim."""
    def mark(fn):
        fn.observation_key = key
        return fn
    return mark


def observations_of(module):
    """The (key, function) pairs a family module declares, in source order."""
    found = [fn for fn in vars(module).values()
             if callable(fn) and hasattr(fn, "observation_key")]
    found.sort(key=lambda fn: fn.__code__.co_firstlineno)
    return [(fn.observation_key, fn) for fn in found]


def claim_of(fn):
    """The one-line claim an observation tests (first line of its docstring)."""
    import inspect  # only the catalogue asks, never a probe run
    return (inspect.getdoc(fn) or "").splitlines()[0] if fn.__doc__ else ""


class Measured:
    """A value plus the context that explains it (buffer sizes, counts, timings)."""

    def __init__(self, value, **detail):
        self.value = value
        self.detail = detail


class Unmeasurable(Exception):
    """The observation could not be measured here; the message says why."""


def experiment(fn):
    """Run an experiment once per probe process and share its result between observations.

    Unlike functools.cache this also remembers a failure, so a broken experiment is not
    retried (and waited for) once per key that reads it.
    """
    outcome = []

    def once():
        if not outcome:
            try:
                outcome.append((True, fn()))
            except Exception as exc:  # noqa: BLE001 - re-raised to every reader
                outcome.append((False, exc))
        ok, result = outcome[0]
        if not ok:
            raise result
        return result

    once.__wrapped__ = fn
    once.__doc__ = fn.__doc__
    return once


# --- naming what happened --------------------------------------------------------------

# Names the contract prefers where one errno number has several names.
_PREFERRED = {"EWOULDBLOCK": "EAGAIN", "ENOTSUP": "EOPNOTSUPP", "EDEADLOCK": "EDEADLK"}


def errno_name(err):
    """The contract's name for an errno (an int or an OSError): EAGAIN, never EWOULDBLOCK."""
    number = err.errno if isinstance(err, OSError) else err
    if number is None:
        return REFUSED_BY_PYTHON
    for alias, preferred in _PREFERRED.items():
        if getattr(errno, alias, None) == number and hasattr(errno, preferred) \
                and getattr(errno, preferred) == number:
            return preferred
    if number == getattr(errno, "EWOULDBLOCK", None):
        return "EAGAIN"
    return errno.errorcode.get(number, f"E#{number}")


def outcome(call, *args, **kwargs):
    """``"ok"`` if the call succeeds, else the errno name (``refused-by-python`` if no errno)."""
    try:
        call(*args, **kwargs)
    except OSError as exc:
        return errno_name(exc)
    return OK


def constant(name, module=socket):
    """A platform constant, or None where this OS (or a test pretending to be one) lacks it."""
    return getattr(module, name, None)


def hide_constants(spec):
    """Remove ``module.NAME`` attributes so a probe takes the path it takes on another OS."""
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module_name, _, attr = item.rpartition(".")
        module = sys.modules.get(module_name or "socket") or __import__(module_name)
        if hasattr(module, attr):
            delattr(module, attr)


# --- bounding every wait -----------------------------------------------------------------

class Scaled(float):
    """Seconds already scaled by the run's multiplier: scaling them again changes nothing.

    Every bound the harness is given passes through ``scaled``, so a probe may hand it a
    raw constant (``CHILD_TIMEOUT = 5.0``) or ``block_window()`` alike, and each is
    stretched exactly once by ``--timeout-multiplier``.
    """


def multiplier():
    """The run's ``--timeout-multiplier`` (1 for a standalone run)."""
    try:
        value = float(os.environ.get(ENV_MULTIPLIER, "1"))
    except ValueError:
        return 1.0
    return value if value > 0 and value != float("inf") else 1.0


def scaled(seconds):
    """``seconds`` stretched by the run's multiplier, once (a Scaled value stays as it is)."""
    if seconds is None or isinstance(seconds, Scaled):
        return seconds
    return Scaled(float(seconds) * multiplier())


def block_window():
    """How long a call may wait before the probe records it as ``"blocks"`` (seconds, scaled)."""
    return scaled(float(os.environ.get(ENV_BLOCK_WINDOW, "0.1")))


def _timeval(seconds):
    whole = int(seconds)
    # Two longs is struct timeval on LP64 Linux, FreeBSD and (little-endian, padded) macOS.
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


def set_send_timeout(sock, seconds):
    """Bound a blocking send with SO_SNDTIMEO; the socket stays a blocking socket."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))


def set_recv_timeout(sock, seconds):
    """Bound a blocking receive with SO_RCVTIMEO; the socket stays a blocking socket."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def bounded_send(sock, send, window=None):
    """Run a send on a blocking socket bounded by SO_SNDTIMEO: ``"ok"``, ``"blocks"`` or errno.

    The kernel reports an expired SO_SNDTIMEO as EAGAIN; an EAGAIN that comes only after
    the window has (nearly) passed is a wait, one that comes at once is a real EAGAIN.
    Python's settimeout is not used: it makes the socket non-blocking and polls, which is
    not what a blocking C caller sees.
    """
    window = block_window() if window is None else scaled(window)
    set_send_timeout(sock, window)
    return _bounded(send, window)


def bounded_recv(sock, recv, window=None):
    """Like bounded_send, for a receive bounded by SO_RCVTIMEO: returns what recv returned."""
    window = block_window() if window is None else scaled(window)
    set_recv_timeout(sock, window)
    return _bounded(recv, window, value=True)


def _bounded(call, window, value=False):
    started = time.monotonic()
    try:
        result = call()
    except OSError as exc:
        waited = time.monotonic() - started
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and waited >= window * 0.8:
            return BLOCKS
        return errno_name(exc)
    return result if value else OK


def connect_as_c(sock, path):
    """connect(2) to a unix socket ``path`` as a C caller makes it, for bounded_send.

    A stop and SIGCONT (a debugger, a paused VM, a tree-wide SIGSTOP) ends a connect that
    SO_SNDTIMEO bounds with EINTR even without a handler (signal(7), "Interruption of
    system calls ... by stop signals").  C code calls again; Python's socket.connect
    instead takes that EINTR for a connection in progress, polls, and reports a socket
    that never connected as connected.  So the call is made through libc, and made
    again after EINTR: bounded_send still measures the wait from the first call.
    """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    raw = os.fsencode(path) + b"\0"
    if sys.platform.startswith(("darwin", "freebsd", "netbsd", "openbsd", "dragonfly")):
        address = struct.pack("BB", 2 + len(raw), socket.AF_UNIX) + raw   # sun_len, sun_family
    else:
        address = struct.pack("@H", socket.AF_UNIX) + raw
    while libc.connect(sock.fileno(), address, len(address)) != 0:
        number = ctypes.get_errno()
        if number != errno.EINTR:
            raise OSError(number, os.strerror(number))


class Overrun(Exception):
    """An observation ran past its budget: a bug in the probe, never a measured value."""


@contextlib.contextmanager
def deadline(seconds):
    """Interrupt whatever is running after ``seconds`` (scaled; SIGALRM) and raise Overrun."""
    seconds = scaled(seconds)

    def expire(signum, frame):
        raise Overrun(f"did not finish within its {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- child processes ----------------------------------------------------------------------

STARTED = b"\x00"    # the byte a child sends just before it calls ``fn``
CHILD_LIMIT = 5.0    # seconds (scaled) a child may take to start, or to be seen waiting


class Child:
    """A forked child running ``fn``; its JSON-able return value comes back through a pipe.

    Waiting is an event (the pipe's EOF), never a sleep loop, and leaving the ``with``
    block kills and reaps the child whatever happened.  Everything the child sent is
    kept across waits: a wait that ends before EOF loses nothing the next one needs.
    The child sends one STARTED byte just before it calls ``fn``, so a parent can tell
    "still forking or not yet scheduled" from "inside the call" (``wait_blocked``).
    """

    def __init__(self, fn, *args, sigpipe_default=False, setup=None):
        reader, writer = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(reader)
            code = 0
            try:
                if sigpipe_default:
                    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                if setup:
                    setup()
                os.write(writer, STARTED)
                result = {"value": fn(*args)}
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
            try:
                os.write(writer, json.dumps(result).encode())
            finally:
                os._exit(code)
        os.close(writer)
        self._reader = reader
        self._received = bytearray()
        self._eof = False
        self.status = None
        self.result = None

    def _read_until(self, done, timeout):
        """Read what the child sends until ``done()`` or EOF; False if ``timeout`` ran out."""
        import select
        end = time.monotonic() + timeout
        while not (self._eof or done()):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._reader], [], [], left)[0]:
                return False
            chunk = os.read(self._reader, 65536)
            if chunk:
                self._received += chunk
            else:
                self._eof = True
        return True

    @property
    def started(self):
        """The child has reached its call (sent STARTED)."""
        return self._received[:1] == STARTED

    def wait_started(self, timeout=CHILD_LIMIT):
        """Wait (scaled) until the child is about to call ``fn``, or has ended: True if so."""
        return self._read_until(lambda: self.started, scaled(timeout))

    def wait(self, timeout):
        """Wait up to ``timeout`` s (scaled) for the child to finish; None if still running."""
        if self.result is not None:
            return self.result
        if not self._read_until(lambda: False, scaled(timeout)):
            return None
        _, self.status = os.waitpid(self.pid, 0)
        self.result = ChildResult(self.status, self._payload())
        return self.result

    def _payload(self):
        """What the child sent, or an error saying why there is nothing usable: a child
        never yields a record with neither a value nor an error."""
        text = bytes(self._received[1:] if self.started else self._received).decode(errors="replace")
        ended = f"the child ended ({describe_status(self.status)})"
        if not text and os.WIFSIGNALED(self.status):
            return {}  # killed before it could answer: the signal is the result
        if not text:
            return {"error": f"{ended} without sending a result"}
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and ("value" in payload or "error" in payload):
            return payload
        return {"error": f"{ended} after sending no usable result: {text[:200]!r}"}

    def asleep(self):
        """True/False from the kernel where it says (Linux /proc: inside a blocking call or
        not); None where the OS does not tell."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                return stat.read().rpartition(")")[2].split()[0] in ("S", "D")
        except (OSError, IndexError):
            return None

    def wait_blocked(self, window=None, limit=CHILD_LIMIT):
        """The child's result if its call returns within ``window``, else ``"blocks"``.

        "blocks" is said only once it is confirmed: the child has reached the call (its
        STARTED byte arrived: the window never has to cover a fork) and, where the kernel
        tells, it is asleep in it.  A child that was not yet scheduled, or was stopped,
        gets another window, up to ``limit`` (scaled) in all.
        """
        window = block_window() if window is None else scaled(window)
        limit = scaled(limit)
        if not self.wait_started(limit):
            raise Unmeasurable(f"the child did not start within {limit:g} s")
        end = time.monotonic() + limit
        while True:
            result = self.wait(window)
            if result is not None:
                return result
            if self.asleep() is not False:
                return BLOCKS
            if time.monotonic() > end:
                raise Unmeasurable(f"the child was neither finished nor asleep in its call "
                                   f"after {limit:g} s (a busy or stopped machine?)")

    def kill(self):
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, self.status = os.waitpid(self.pid, 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        os.close(self._reader)


def describe_status(status):
    """``exit status 1`` or ``killed by SIGKILL``, from a waitpid status."""
    if status is None:
        return "still running"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


class ChildResult:
    def __init__(self, status, payload):
        self.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        self.value = payload.get("value")
        self.error = payload.get("error")

    @property
    def signal_name(self):
        return signal.Signals(self.signal).name if self.signal else None


def in_child(fn, *args, timeout=CHILD_LIMIT, **options):
    """Run ``fn`` in a forked child and return its ChildResult, or raise Overrun."""
    timeout = scaled(timeout)
    with Child(fn, *args, **options) as child:
        result = child.wait(timeout)
        if result is None:
            raise Overrun(f"child did not finish within {timeout:g} s "
                          f"(--timeout-multiplier {multiplier():g})")
        return result


def largest_accepted(attempt, smallest, ceiling):
    """The largest size ``attempt`` accepts, and what it answers one past that.

    ``attempt(size)`` returns ``"ok"`` or an errno name.  Doubling from ``smallest`` finds
    a size that fails, then bisection finds the edge: about 2 log2(limit) attempts instead
    of one per size.  Returns ``(largest, outcome_past_it, attempts)``.
    """
    tried = {}

    def accepted(size):
        if size not in tried:
            tried[size] = attempt(size)
        return tried[size] == OK

    if not accepted(smallest):
        raise Unmeasurable(f"even {smallest} was refused: {tried[smallest]}")
    good, bad = smallest, None
    while bad is None:
        size = min(good * 2, ceiling)
        if not accepted(size):
            bad = size
        elif size == ceiling:
            raise Unmeasurable(f"everything up to {ceiling} was accepted")
        else:
            good = size
    while bad - good > 1:
        middle = (good + bad) // 2
        if accepted(middle):
            good = middle
        else:
            bad = middle
    accepted(good + 1)
    return good, tried[good + 1], len(tried)


def unique_name(stem):
    """A name for a shm object or semaphore no other run can be using: short (macOS allows
    30 characters to sem_open), with this process's pid and a random part, since runs in
    other pid namespaces may share /dev/shm."""
    unique_name.counter = getattr(unique_name, "counter", 0) + 1
    return f"/{stem}{os.getpid()}{os.urandom(2).hex()}x{unique_name.counter}"


# --- running a family -------------------------------------------------------------------------

@contextlib.contextmanager
def _private_workdir():
    given = os.environ.get(ENV_WORKDIR)
    if given:
        yield given
        return
    # Standalone run: make our own, short (socket paths!) and private.
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="ipcm-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _scratch(workdir, index):
    """A fresh directory for one observation, entered, and removed (with a report) after."""
    path = os.path.join(workdir, f"o{index}")
    os.mkdir(path, 0o700)
    before = os.getcwd()
    os.chdir(path)
    leftovers = []
    try:
        yield leftovers
    finally:
        os.chdir(before)
        leftovers.extend(sorted(os.listdir(path)))
        if leftovers:
            import shutil   # only then: a probe starts faster without it (and tempfile)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.rmdir(path)


def limit_reached(exc):
    """For an error that is this process's open-file limit, the words that name it ("")."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        whose = "this process's" if exc.errno == errno.EMFILE else "the system's"
        return f" (ran out of open files: {whose} limit; ulimit -n = {soft} here)"
    return ""


def measure(key, fn, workdir, index, budget):
    """Run one observation and return its record: value (+detail) or error."""
    started = time.monotonic()
    with _scratch(workdir, index) as leftovers:
        try:
            with deadline(budget):
                result = fn()
        except Unmeasurable as exc:
            record = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any failure is this key's error
            record = {"error": f"{type(exc).__name__}: {exc}{limit_reached(exc)}"}
        else:
            if isinstance(result, Measured):
                record = {"value": result.value}
                if result.detail:
                    record["detail"] = result.detail
            else:
                record = {"value": result}
    if leftovers:
        record["leftovers"] = leftovers
    record["ms"] = round((time.monotonic() - started) * 1000, 1)
    return record


def main(module=None):
    """Run every observation of the calling family module and print one JSON document."""
    module = module or sys.modules["__main__"]
    family = module.__spec__.name.rpartition(".")[2] if module.__spec__ else module.__name__
    hide_constants(os.environ.get(ENV_HIDE, ""))
    only = set(filter(None, os.environ.get(ENV_ONLY, "").split(",")))
    # The runner's budget is already scaled (it comes from the scaled probe deadline).
    budget = Scaled(float(os.environ[ENV_BUDGET])) if ENV_BUDGET in os.environ else scaled(10)
    progress_path = os.environ.get(ENV_PROGRESS)
    started = time.monotonic()
    results = {}
    with _private_workdir() as workdir:
        for index, (key, fn) in enumerate(observations_of(module)):
            if only and key not in only:
                continue
            results[key] = measure(key, fn, workdir, index, budget)
            if progress_path:
                with open(progress_path, "a") as progress:
                    progress.write(json.dumps({key: results[key]}) + "\n")
    document = {"family": family, "pid": os.getpid(), "observations": results,
                "ms": round((time.monotonic() - started) * 1000, 1)}
    sys.stdout.write(json.dumps(document, indent=1, sort_keys=False) + "\n")
    sys.stdout.flush()
