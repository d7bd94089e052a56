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
import time
import uuid
from dataclasses import asdict, dataclass, field

import psutil

from probes import harness

TOKEN_VARIABLE = "IPCMATRIX_RUN_TOKEN"
PROGRESS_FILE = ".progress"
MAX_OUTPUT = 8 << 20       # bytes of stdout we are prepared to parse
TAIL = 2000                # characters of stderr/stdout kept for reports


@dataclass
class ProbeRun:
    """What one probe run produced, and what the runner had to clean up after it."""
    family: str
    status: str                        # ok | timeout | crashed | invalid-output | failed
    observations: dict = field(default_factory=dict)   # key -> {value|error, detail, ms}
    returncode: int | None = None
    signal: str | None = None
    elapsed_s: float = 0.0
    deadline_s: float = 0.0
    message: str = ""
    stderr_tail: str = ""
    left_processes: list = field(default_factory=list)
    left_files: list = field(default_factory=list)

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)


def probe_command(family, python=sys.executable):
    """How a family is run: isolated (-I), as a module, by the interpreter running the kit."""
    return [python, "-I", "-m", f"probes.{family}"]


def private_workdir():
    """A fresh 0700 directory with a short path: /tmp/ipcm-XXXXXXXX, never pytest's tmp_path."""
    path = tempfile.mkdtemp(prefix="ipcm-", dir="/tmp")
    os.chmod(path, 0o700)
    return path


def run(family, deadline, command=None, env=None, owner=None):
    """Run a probe family (or ``command``) with a deadline; always returns a ProbeRun.

    ``owner`` (uid, gid) hands the private directory to the user a ``command`` runs as.
    Interrupted (Ctrl-C reaches the runner, not the probe: it has its own process group),
    it still kills the probe's tree and removes the work directory before re-raising.
    """
    workdir = private_workdir()
    if owner is not None:
        os.chown(workdir, *owner)
    try:
        return _run_in(workdir, family, deadline, command or probe_command(family), env)
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
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err, process_group=0)
        except OSError as exc:
            return ProbeRun(family, "failed", message=f"could not start {command[0]}: {exc}",
                            deadline_s=deadline)
        try:
            finished = wait_for_exit(process, deadline)
        except BaseException:
            kill_tree(process)
            sweep_processes(token)
            raise
        if not finished:
            kill_tree(process)
        result = ProbeRun(family, "ok", returncode=process.returncode, deadline_s=deadline,
                          elapsed_s=round(time.monotonic() - started, 3))
        result.left_processes = sweep_processes(token)
        result.left_files = sweep_files(workdir)
        stdout, stderr = read_capped(out), read_capped(err)
    result.stderr_tail = stderr[-TAIL:]
    judge_exit(result, finished, stdout, salvage_progress(workdir))
    return result


def judge_exit(result, finished, stdout, progress):
    """Decide the run's status and keep every observation that was measured."""
    code = result.returncode
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
    """Wait at most ``timeout`` s for the process to exit; True when it has (it is reaped).

    The wait is an event where the kernel offers one: a pidfd (Linux 5.3+) or kqueue's
    EVFILT_PROC.  Where it does not (pidfd_open is ENOSYS on Linux before 5.3, such as
    RHEL 8's 4.18, and on gVisor before release-20260504.0; a seccomp filter may answer
    EPERM), Popen's own timed wait takes over, so a live probe is never judged hung early.
    """
    timeout = max(timeout, 0)
    started = time.monotonic()
    waited = _wait_for_exit_event(process.pid, timeout)
    left = 0 if waited else max(timeout - (time.monotonic() - started), 0)
    try:
        process.wait(timeout=left)
        return True
    except subprocess.TimeoutExpired:
        return False


def _wait_for_exit_event(pid, timeout):
    """Block until ``pid`` exits or ``timeout`` passes; False when no exit event is available."""
    try:
        if hasattr(os, "pidfd_open"):
            with _closing_fd(os.pidfd_open(pid)) as pidfd:
                select.select([pidfd], [], [], timeout)
            return True
        if hasattr(select, "kqueue"):
            queue = select.kqueue()
            with contextlib.closing(queue):
                event = select.kevent(pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD,
                                      select.KQ_NOTE_EXIT)
                queue.control([event], 1, timeout)
            return True
    except ProcessLookupError:
        return True  # already gone: the wait after this reaps it at once
    except OSError:
        return False  # ENOSYS, EPERM, EMFILE...: no event to wait on, so wait the other way
    return False


@contextlib.contextmanager
def _closing_fd(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def kill_tree(process):
    """SIGKILL the probe's process group and every descendant psutil can still see."""
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(process.pid).children(recursive=True)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def sweep_processes(token):
    """Kill and report every process still carrying this run's token in its environment."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TOKEN_VARIABLE) != token:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append({"pid": proc.pid, "name": proc.info["name"],
                          "cmdline": " ".join(proc.info["cmdline"] or [])[:200]})
            proc.kill()
        except (psutil.Error, OSError):
            continue
    if found:
        psutil.wait_procs([psutil.Process(p["pid"]) for p in found if psutil.pid_exists(p["pid"])],
                          timeout=2)
    return found


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
    stream.seek(0)
    return stream.read(MAX_OUTPUT).decode("utf-8", errors="replace")
