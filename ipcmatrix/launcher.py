"""The runner's end of probes._launcher: probes started by forking one warmed interpreter.

Starting a probe interpreter and importing what every family imports is most of a small
family's cost; the launcher pays it once a process.  ``launch`` hands it a run (the
module, working directory, environment and the three standard descriptors) and returns
a ``Launched`` probe the runner waits on, kills and sweeps as it would a subprocess.
Where the launcher cannot start or has died, ``launch`` returns None and the runner
starts the probe's own interpreter instead; ``IPCMATRIX_LAUNCH=exec`` asks for that
always (to rule the launcher out when a probe behaves oddly).
"""
from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ipcmatrix import probes

LAUNCH_VARIABLE = "IPCMATRIX_LAUNCH"   # "exec": every probe starts its own interpreter
TOKEN_VARIABLE = "IPCMATRIX_RUN_TOKEN"  # marks every process of one probe run (runner.new_token)
TOKEN_WIDTH = 32                        # characters of a token: uuid4().hex

# A probe needs the standard library and its own package, nothing from site-packages, so
# its interpreter skips ``site`` (-S: no .pth files; an editable install's finder alone
# costs ~30 ms a start) and finds the probes package by its directory.
PROBE_BOOT = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
              "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")
REAP_LIMIT_S = 10.0   # how long a killed probe's status may take to come back


class Launched:
    """A probe the launcher forked: the parts of ``subprocess.Popen`` the runner uses."""

    def __init__(self, pid, channel, launcher):
        self.pid = pid
        self.returncode = None
        self.lost = ""              # why no exit status came back, if none did
        self._channel = channel
        self._launcher = launcher
        self._received = b""

    def exit_fd(self):
        """Readable once the probe has been reaped (or the launcher died)."""
        return self._channel.fileno()

    def poll(self):
        if self.returncode is None and not self.lost:
            self._read(timeout=0)
        return self.returncode

    def wait(self, timeout=None):
        """The exit code once the launcher reaped the probe; TimeoutExpired before that."""
        if self.returncode is None and not self.lost:
            self._read(REAP_LIMIT_S if timeout is None else timeout)
        if self.returncode is None and not self.lost:
            if timeout is None:
                self._lose(f"the probe launcher (pid {self._launcher.pid}) did not report "
                           f"how probe {self.pid} exited within {REAP_LIMIT_S:g} s")
                return None
            raise subprocess.TimeoutExpired(f"probe {self.pid}", timeout)
        return self.returncode

    def _read(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self._received:
            left = max(0.0, end - time.monotonic())
            if not select.select([self._channel], [], [], left)[0]:
                return
            chunk = self._channel.recv(64)
            if not chunk:
                self._lose(f"the probe launcher (pid {self._launcher.pid}) ended before it "
                           f"reported how probe {self.pid} exited")
                return
            self._received += chunk
        line = self._received.partition(b"\n")[0]
        self.returncode = os.waitstatus_to_exitcode(int(line))
        self._channel.close()

    def _lose(self, why):
        self.lost = why
        self._channel.close()
        with contextlib.suppress(OSError):   # orphaned now: nobody else will end its group
            os.killpg(self.pid, signal.SIGKILL)


class Launcher:
    """One probes._launcher process, started on first use and ended with this process."""

    def __init__(self, python=sys.executable):
        self.python = python
        self.pid = None
        self.broken = ""            # why it cannot be used, once it could not
        self._lock = threading.Lock()
        self._control = None
        self._process = None
        self._stderr = None

    def start(self):
        """Start the launcher now (it imports while the caller goes on); False if it cannot."""
        with self._lock:
            return self._start_locked()

    def _start_locked(self):
        if self._control is not None or self.broken:
            return not self.broken
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        package = Path(probes.__path__[0])
        command = [self.python, "-I", "-S", "-c", PROBE_BOOT, str(package.parent),
                   f"{package.name}._launcher", str(theirs.fileno()), TOKEN_VARIABLE]
        # The placeholder each forked probe overwrites with its own run's token.
        environment = {**os.environ, TOKEN_VARIABLE: "0" * TOKEN_WIDTH}
        try:
            self._stderr = tempfile.TemporaryFile()
            # Its own process group: Ctrl-C at a terminal reaches the runner, which ends
            # the probes itself; the launcher ends once this process's end closes.
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=environment,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr, process_group=0)
        except OSError as exc:
            ours.close()
            self.broken = f"the probe launcher could not start: {exc}"
            return False
        finally:
            theirs.close()
        self._control, self.pid = ours, self._process.pid
        atexit.register(self.close)
        return True

    def launch(self, module, cwd, env, stdio, path, limit=60.0):
        """Fork a probe running ``module`` (imported from the directory ``path``): a
        Launched, or None if the launcher cannot (the reason is in ``broken``; nothing
        was started).  ``limit``: seconds the fork may
        take to be confirmed."""
        if os.environ.get(LAUNCH_VARIABLE) == "exec":
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                if not self._start_locked():
                    return None
                fds = array.array("i", [theirs.fileno(), *stdio])
                self._control.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            theirs.close()
            ours.sendall(json.dumps({"module": module, "path": path, "cwd": cwd, "env": env}).encode())
            ours.shutdown(socket.SHUT_WR)
            ours.settimeout(limit)
            pid, rest = self._read_pid(ours)
            ours.settimeout(None)
        except OSError as exc:
            ours.close()
            theirs.close()
            self._break(f"the probe launcher stopped answering: {exc}")
            if isinstance(exc, TimeoutError):
                self.close()   # it ends whatever it may still fork for this request
            return None
        if pid is None:
            ours.close()
            return None
        launched = Launched(pid, ours, self)
        launched._received = rest   # the probe may have ended already
        return launched

    def _read_pid(self, channel):
        """(pid, what came after it), or (None, b"") once the launcher said it cannot."""
        received = b""
        while b"\n" not in received:
            chunk = channel.recv(256)
            if not chunk:
                self._break("the probe launcher ended" + self._said())
                return None, b""
            received += chunk
        line, _, rest = received.partition(b"\n")
        text = line.decode(errors="replace")
        if not text.isdigit():
            self._break(f"the probe launcher said: {text}")
            return None, b""
        return int(text), rest

    def _said(self):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._stderr.seek(0)
            said = self._stderr.read()[-600:].decode(errors="replace").strip()
            if said:
                return f"; it printed: {said}"
        return ""

    def _break(self, why):
        self.broken = self.broken or why

    def close(self):
        """End the launcher (it kills any probe it still has) and reap it."""
        with self._lock:
            control, self._control = self._control, None
            if control is None:
                return
            control.close()
            _wait_for_exit(self._process, REAP_LIMIT_S)
            if self._process.returncode is None:
                self._process.kill()
                self._process.wait()
            self._stderr.close()


def _wait_for_exit(process, limit):
    """Reap ``process`` once it exits, within ``limit`` s: on its exit event where there is
    one (Popen.wait with a timeout polls, and a run would wait out the poll's last sleep)."""
    from ipcmatrix import runner   # imported by now: the launcher ends after every run
    runner._wait_for_exit_event(process.pid, limit)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=limit if process.poll() is None else 0)


LAUNCHER = Launcher()


def warm_up():
    """Start the launcher now, so that its imports overlap the caller's own start."""
    if os.environ.get(LAUNCH_VARIABLE) != "exec":
        LAUNCHER.start()
