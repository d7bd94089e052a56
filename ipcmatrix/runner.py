"""Run one probe in its own process group and private directory, and account for it.

The runner is the last line of defence: probes bound their own waits, but whatever a
probe does, ``run`` returns by its deadline with what was measured, and leaves no
process (found through a token in their environment, even if they moved to another
session) and no file (the private directory is checked, then removed) behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from dataclasses import asdict, dataclass, field

from ipcmatrix import launcher, probes
from ipcmatrix.launcher import PROBE_BOOT, TOKEN_VARIABLE  # noqa: F401 - the runner's names too
from ipcmatrix.probes import _libc, _sysv, harness, mq

PROGRESS_FILE = ".progress"
MAX_OUTPUT = 8 << 20       # bytes of stdout we are prepared to parse
TAIL = 2000                # characters of stderr/stdout kept for reports
WORK_ROOT_VARIABLE = "IPCMATRIX_WORK_ROOT"   # where private directories go (default /tmp)


@dataclass
class ProbeRun:
    """What one probe run produced, and what the runner had to clean up after it."""
    family: str
    status: str                        # ok | timeout | crashed | invalid-output | failed | interrupted
    observations: dict = field(default_factory=dict)   # key -> {value|error, detail, ms}
    returncode: int | None = None
    signal: str | None = None
    elapsed_s: float = 0.0
    deadline_s: float = 0.0
    message: str = ""
    stderr_tail: str = ""
    left_processes: list = field(default_factory=list)
    left_files: list = field(default_factory=list)
    left_ipc_objects: list = field(default_factory=list)

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)


def probe_module(family):
    """(directory to import from, module name) of a family's probe."""
    package = Path(probes.__path__[0])
    return str(package.parent), f"{package.name}.{family}"


def probe_command(family, python=sys.executable, module=None):
    """How a family is run in an interpreter of its own: isolated (-I -S), as a module of
    the probes package (or ``module``, a (directory, name) pair), by the interpreter
    running the kit; ``python -m probes.<family>`` in a checkout does the same."""
    directory, name = module or probe_module(family)
    return [python, "-I", "-S", "-c", PROBE_BOOT, directory, name]


# --- ending every run at once (a signal, the run's own deadline) -------------------------

class _Cancellation:
    """One flag for the whole process, and a pipe every waiting runner also selects on:
    once ``cancel`` writes to it, every wait in every thread returns at once."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""
        self._pipe = None
        self._lock = threading.Lock()

    def fd(self):
        with self._lock:
            if self._pipe is None:
                self._pipe = os.pipe()
                if self.event.is_set():
                    os.write(self._pipe[1], b"!")
            return self._pipe[0]

    def cancel(self, reason):
        # Called from signal handlers too: no lock here, only a flag and one write.
        if self.event.is_set():
            return
        self.reason = reason
        self.event.set()
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe[1], b"!")


CANCELLATION = _Cancellation()


def cancel_all(reason="the run was interrupted"):
    """End every probe this process runs now, and start no more: each running probe's tree
    is killed by the thread that runs it, which reports it ``interrupted`` with what it
    measured."""
    CANCELLATION.cancel(reason)


def cancelled():
    return CANCELLATION.event.is_set()


def end_on_signals():
    """SIGTERM and SIGHUP (``timeout``, CI cancelling a job, a closed terminal) end a run
    as Ctrl-C does (KeyboardInterrupt), and all three first cancel every probe this
    process runs, so that the report of what was measured is written at once.  A handler
    someone else installed is left alone (a placeholder, such as the command line's
    quiet exit while it imports, is replaced), and so is a signal the parent ignores."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, default in ((signal.SIGINT, signal.default_int_handler),
                            (signal.SIGTERM, signal.SIG_DFL), (signal.SIGHUP, signal.SIG_DFL)):
        current = signal.getsignal(signum)
        if current is default or getattr(current, "placeholder", False):
            signal.signal(signum, end_run)


def end_run(signum, frame):
    name = signal.Signals(signum).name
    cancel_all(f"the run was interrupted by {name}")
    raise KeyboardInterrupt(name)


def private_workdir():
    """A fresh 0700 directory with a short path: /tmp/ipcm-XXXXXXXX, never pytest's tmp_path."""
    path = tempfile.mkdtemp(prefix="ipcm-", dir=os.environ.get(WORK_ROOT_VARIABLE, "/tmp"))
    os.chmod(path, 0o700)
    return path


def run(family, deadline, command=None, env=None, owner=None, module=None):
    """Run a probe family (or ``command``, or ``module``: a (directory, name) pair to run
    as the family's probe) with a deadline; always returns a ProbeRun.

    ``owner`` (uid, gid) hands the private directory to the user a ``command`` runs as.
    Interrupted (Ctrl-C reaches the runner, not the probe: it has its own process group),
    it still kills the probe's tree and removes the work directory before re-raising.
    """
    if cancelled():
        return ProbeRun(family, "interrupted", deadline_s=deadline,
                        message=f"{CANCELLATION.reason} before this probe started")
    workdir = private_workdir()
    if owner is not None:
        os.chown(workdir, *owner)
    try:
        return _run_in(workdir, family, deadline, command or module, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def new_token():
    """A mark for every process of one probe run, inherited through its environment."""
    return uuid.uuid4().hex


def _run_in(workdir, family, deadline, command, env):
    token = new_token()
    environment = dict(os.environ if env is None else env)
    environment.update({harness.ENV_WORKDIR: workdir, TOKEN_VARIABLE: token,
                        harness.ENV_PROGRESS: os.path.join(workdir, PROGRESS_FILE)})
    started, started_at = time.monotonic(), time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = start(family, command, workdir, environment, out, err, deadline)
        except OSError as exc:
            what = command[0] if isinstance(command, list) else sys.executable
            return ProbeRun(family, "failed", message=f"could not start {what}: {exc}",
                            deadline_s=deadline)
        try:
            finished = wait_for_exit(process, deadline)
        except BaseException:
            kill_tree(process)
            sweep_processes(token, since=started_at, group=process.pid)
            raise
        interrupted = not finished and cancelled()
        if not finished:
            kill_tree(process)
        result = ProbeRun(family, "ok", returncode=process.returncode, deadline_s=deadline,
                          elapsed_s=round(time.monotonic() - started, 3))
        if interrupted:
            result.status = "interrupted"
        elif getattr(process, "lost", ""):   # the launcher died: no exit status to judge
            result.status, result.message = "failed", process.lost
        result.left_processes = sweep_processes(token, since=started_at, group=process.pid)
        result.left_ipc_objects = sweep_ipc_objects(workdir, process.pid)
        result.left_files = sweep_files(workdir)
        stdout, stderr = read_capped(out), read_capped(err)
    result.stderr_tail = stderr[-TAIL:]
    judge_exit(result, finished, stdout, salvage_progress(workdir))
    return result


def start(family, command, workdir, environment, out, err, deadline):
    """Start ``command`` (a list), or a probe module (None: the family's; a (directory,
    name) pair): forked by the launcher where it can, else in an interpreter of its own
    (``probe_command``); in a process group of its own either way."""
    if not isinstance(command, list):
        directory, name = command or probe_module(family)
        with open(os.devnull, "rb") as nothing:
            launched = launcher.LAUNCHER.launch(name, workdir, environment,
                                                (nothing.fileno(), out.fileno(), err.fileno()),
                                                path=directory, limit=deadline)
        if launched is not None:
            return launched
        command = probe_command(family, module=(directory, name))
    return subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, process_group=0)


def judge_exit(result, finished, stdout, progress):
    """Decide the run's status and keep every observation that was measured."""
    code = result.returncode
    if result.status == "failed":   # decided before: the probe's launcher died
        result.observations = progress
        return
    if result.status == "interrupted":
        result.message = (f"{CANCELLATION.reason} after {result.elapsed_s:g} s; the probe's "
                          f"process tree was killed; what it finished is kept")
        result.observations = progress
        return
    if not finished:
        result.status = "timeout"
        result.message = (f"probe still running after {result.elapsed_s:g} s "
                          f"(its deadline {result.deadline_s:g} s); its process tree was killed")
        result.observations = progress
        return
    if code is not None and code < 0:
        result.signal = signal.Signals(-code).name
        result.status = "crashed"
        result.message = f"probe killed by {result.signal}"
        result.observations = progress
        return
    try:
        document = json.loads(stdout)
        observations = document["observations"]
        if not isinstance(observations, dict):
            raise TypeError("observations is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        result.status = "invalid-output"
        result.message = (f"probe exited {code} without one JSON document on stdout "
                          f"({exc}); it printed: {stdout[:300]!r}")
        result.observations = progress
        return
    result.observations = observations
    if code != 0:
        result.status = "failed"
        result.message = f"probe exited with status {code}"


def wait_for_exit(process, timeout):
    """Wait at most ``timeout`` s for the process to exit, or until the run is cancelled
    (``cancel_all``); True when it has exited (it is reaped).

    The wait is an event where the kernel offers one: a pidfd (Linux 5.3+) or kqueue's
    EVFILT_PROC.  Where it does not (pidfd_open is ENOSYS on Linux before 5.3, such as
    RHEL 8's 4.18, and on gVisor before release-20260504.0; a seccomp filter may answer
    EPERM), the process is looked at every POLL_INTERVAL_S instead, so a live probe is
    never judged hung early.
    """
    timeout = max(timeout, 0)
    wake = CANCELLATION.fd()
    if isinstance(process, launcher.Launched):   # the launcher reports its exit
        select.select([process.exit_fd(), wake], [], [], timeout)
    elif not _wait_for_exit_event(process.pid, timeout, wake):
        _poll_for_exit(process, timeout, wake)
    try:
        process.wait(timeout=0)
        return True
    except subprocess.TimeoutExpired:
        return False


def _wait_for_exit_event(pid, timeout, wake=None):
    """Block until ``pid`` exits, ``wake`` (if given) is readable or ``timeout`` passes;
    False when the kernel offers no exit event to wait on."""
    try:
        if hasattr(os, "pidfd_open"):
            with _closing_fd(os.pidfd_open(pid)) as pidfd:
                select.select([pidfd] + ([] if wake is None else [wake]), [], [], timeout)
            return True
        if hasattr(select, "kqueue"):
            queue = select.kqueue()
            with contextlib.closing(queue):
                events = [select.kevent(pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD,
                                        select.KQ_NOTE_EXIT)]
                if wake is not None:
                    events.append(select.kevent(wake, select.KQ_FILTER_READ, select.KQ_EV_ADD))
                queue.control(events, 1, timeout)
            return True
    except ProcessLookupError:
        return True  # already gone: the wait after this reaps it at once
    except OSError:
        return False  # ENOSYS, EPERM, EMFILE...: no event to wait on, so wait the other way
    return False


POLL_INTERVAL_S = 0.02     # how often a probe is looked at where no exit event exists


def _poll_for_exit(process, timeout, wake):
    """Without an exit event: look at the process now and then until it exits, ``timeout``
    passes or the run is cancelled (``wake`` readable)."""
    end = time.monotonic() + timeout
    while process.poll() is None:
        left = end - time.monotonic()
        if left <= 0 or select.select([wake], [], [], min(left, POLL_INTERVAL_S))[0]:
            return


@contextlib.contextmanager
def _closing_fd(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def _psutil():
    """psutil, imported when first needed: a run's first probes start sooner without it."""
    import psutil
    return psutil


def kill_tree(process):
    """SIGKILL the probe's process group and every descendant psutil can still see."""
    # Finding descendants is the extra mile (the group kill below is the rule): out of
    # memory (ulimit -v) it is skipped rather than leave the group alive.
    with contextlib.suppress(ImportError, MemoryError):
        psutil = _psutil()
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# psutil's create_time is a whole number of clock ticks after boot: allow a few ticks.
CREATE_TIME_SLACK_S = 1.0


def sweep_processes(token, since=None, group=None):
    """Kill and report every process still carrying this run's token in its environment,
    or still in the probe's process ``group``.

    The group is a second net, for a process whose environment does not show the token:
    one a probe started with an environment of its own (``env=`` leaves the token out).
    Only a process started
    after ``since`` (the probe's start, epoch seconds) can be either, so older ones are
    passed over on their start time, which psutil reads once per process and keeps: a
    sweep beside hundreds of idle processes costs a directory listing, not one
    environment read each.
    """
    psutil = _psutil()
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if since is not None and proc.create_time() < since - CREATE_TIME_SLACK_S:
                continue
            if not (group is not None and _group_of(proc.pid) == group
                    or proc.environ().get(TOKEN_VARIABLE) == token):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append({"pid": proc.pid, "name": proc.name(),
                          "cmdline": " ".join(proc.cmdline() or [])[:200]})
            proc.kill()
        except (psutil.Error, OSError):
            continue
    for entry in found:
        _wait_until_dead(entry["pid"], psutil, SWEEP_WAIT_S)
    return found


SWEEP_WAIT_S = 2.0   # a SIGKILLed process is dead within ms; this bounds a stuck one


def _wait_until_dead(pid, psutil, limit):
    """Wait (at most ``limit`` s) for a killed process to die: to exit, not to be reaped,
    since its parent may be an init that reaps when it gets round to it (psutil.wait_procs
    would wait out the limit for every such zombie)."""
    if _wait_for_exit_event(pid, limit):   # a pidfd or kqueue event: once it has exited
        return
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(POLL_INTERVAL_S)


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def sweep_files(workdir):
    """Names the probe left in its directory (its progress file aside)."""
    left = []
    for root, dirs, files in os.walk(workdir):
        for name in dirs + files:
            path = os.path.relpath(os.path.join(root, name), workdir)
            if path != PROGRESS_FILE:
                left.append(path)
    return sorted(left)


def salvage_progress(workdir):
    """The observations a probe finished before it died, from its progress file."""
    measured = {}
    with contextlib.suppress(OSError):
        with open(os.path.join(workdir, PROGRESS_FILE), encoding="utf-8") as progress:
            for line in progress:
                with contextlib.suppress(ValueError):
                    measured.update(json.loads(line))
    return measured


def read_capped(stream):
    """What the probe wrote, at most MAX_OUTPUT bytes (reading what is there, not a buffer
    of the cap: a run under a tight ulimit -v has no 8 MiB to spare per probe)."""
    size = min(os.fstat(stream.fileno()).st_size, MAX_OUTPUT)
    stream.seek(0)
    return stream.read(size).decode("utf-8", errors="replace")


# --- System V objects and POSIX message queues ----------------------------------------------

def sweep_ipc_objects(workdir, pid):
    """Remove and report the System V objects, message queues and POSIX named semaphores
    and shm objects a probe run left behind.

    They outlive every process (until reboot or ipcrm), so neither the process sweep nor
    the work directory's removal ends them.  A probe writes each key or queue name to
    its record (probes._sysv) before creating it; any recorded one that still exists is
    a leftover.  As a net for objects made without the record: a shm segment whose
    creator is the probe's own process (/proc/sysvipc/shm, Linux), and a queue in
    /dev/mqueue whose name carries the probe's pid (harness.unique_name), where mounted.
    Only objects this run made are touched: colleagues' runs share the same namespace.
    """
    path = os.path.join(workdir, _sysv.RECORD_FILE)
    recorded = _sysv.read_record(path)
    with contextlib.suppress(OSError):
        os.unlink(path)
    left = []
    for kind, name in recorded + _unrecorded_ipc_objects(pid, recorded):
        if kind == "mq":
            removed = _attempt(mq.mq_unlink, name)
        elif kind == "posix-sem":
            removed = _attempt(_libc.sem_unlink, name)
        elif kind == "posix-shm":
            removed = _attempt(_libc.shm_unlink, name)
        elif kind == "shm-id":      # a private segment (IPC_PRIVATE): only its id finds it
            removed = _attempt(_sysv.shm_remove, int(name))
        elif kind in _sysv.GET:
            removed = _remove_sysv(kind, int(name))
        else:
            continue
        if removed:
            left.append({"kind": kind, "name": str(name)})
    return left


def _attempt(call, *args):
    try:
        call(*args)
    except (OSError, _libc.Missing):
        return False
    return True


def _remove_sysv(kind, key):
    """IPC_RMID of the object with this key; False when there is none (the probe removed it)."""
    try:
        ident = _sysv.GET[kind](key)
        _sysv.REMOVE[kind](ident)
    except (OSError, _libc.Missing, ValueError):
        return False
    return True


def _unrecorded_ipc_objects(pid, recorded, proc_shm="/proc/sysvipc/shm", mqueue="/dev/mqueue"):
    """(kind, key or name) of objects the probe's own process made but did not record."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(proc_shm, encoding="ascii") as table:
            header = table.readline().split()
            key_at, id_at, cpid_at = (header.index(column) for column in ("key", "shmid", "cpid"))
            for line in table:
                fields = line.split()
                if int(fields[cpid_at]) == pid:
                    private = int(fields[key_at]) == _sysv.IPC_PRIVATE
                    found.append(("shm-id", fields[id_at]) if private else ("shm", fields[key_at]))
    with contextlib.suppress(OSError):
        for entry in os.listdir(mqueue):
            if str(pid) in entry:
                found.append(("mq", "/" + entry))
    return [pair for pair in found if pair not in recorded]
