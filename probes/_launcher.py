"""The launcher: one warmed interpreter that starts every probe of a run by forking.

A probe started as ``python -I -S -m probes.<family>`` spends most of its start importing
the standard library every family shares (json, socket, ctypes, re through json...):
about 30 ms of CPU a family, more than many families' own work.  The runner starts this
module once instead and asks it for each probe run.  It forks, and the child becomes the
probe as that command would have made it: its own process group, the run's working
directory and environment, the run's stdin, stdout and stderr and no other descriptor,
the signal dispositions of a fresh interpreter, and ``runpy`` running the family as
``__main__``.  Every family still runs in a process of its own.  Children fork from this
interpreter only, never from each other, and it imports no module of the probes package,
so nothing one run does can reach another.

The protocol, over the stream socket whose descriptor is argv[1]:

- the runner sends one byte carrying four descriptors (SCM_RIGHTS): a stream socket of
  this run's own, and the run's stdin, stdout and stderr;
- on the run's socket it writes the request, a JSON object {"module", "path" (the
  directory to import it from), "cwd", "env"}, and shuts down its side for writing;
- the launcher answers on the run's socket with one line, the child's pid (or
  ``error: <why>``), and, once it has reaped the child, a second line: the raw wait
  status.

Once the runner's end of argv[1] closes, however the runner ended (SIGKILL included),
the launcher kills the process group of every probe still running and exits.

The runner finds every process of a probe run, even one that left the probe's session,
by a token in its environment (argv[2] names the variable).  The kernel shows a
process's environment as it was at exec, and a child forked from here was never exec'd:
so the runner starts the launcher with a placeholder of the token's width, and each
child writes its run's token over the placeholder's bytes in place (as setproctitle
rewrites argv), before anything else.  Every process it forks without exec'ing shows the
token, and every process it execs inherits it from ``os.environ``.
"""
import array
import atexit
import contextlib
import ctypes
import errno
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import traceback

# What most families import, loaded here once and shared by every child copy-on-write;
# a module this platform lacks is only not shared.
SHARED = ("fcntl", "math", "mmap", "resource", "statistics", "struct",
          "subprocess", "time", "warnings")
for name in SHARED:
    with contextlib.suppress(ImportError):
        __import__(name)

RUN_FDS = 4                 # the run's socket, stdin, stdout, stderr
REQUEST_LIMIT = 16 << 20    # bytes of request (the environment is most of it)
REQUEST_TIMEOUT_S = 30.0    # the runner writes its request at once; this only ends a wedge


class Placeholder:
    """Where this process's exec-time environment holds ``variable``'s value, to rewrite."""

    def __init__(self, variable):
        self.prefix = f"{variable}=".encode()
        self.address, self.width = self._find()

    def _find(self):
        for entry in _environ_entries():
            text = ctypes.string_at(entry)
            if text.startswith(self.prefix):
                return entry + len(self.prefix), len(text) - len(self.prefix)
        raise LookupError(f"{self.prefix.decode()[:-1]} is not in the environment")

    def write(self, value):
        value = value.encode()
        if len(value) != self.width:
            raise ValueError(f"a token of {len(value)} bytes for a placeholder of {self.width}")
        ctypes.memmove(self.address, value, self.width)


def _environ_entries():
    """The addresses of the environment's strings, from libc's ``environ`` (macOS: its
    accessor, as a library cannot link the symbol)."""
    libc = ctypes.CDLL(None)
    if sys.platform == "darwin":
        libc._NSGetEnviron.restype = ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p))
        array_ = libc._NSGetEnviron().contents
    else:
        array_ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    index = 0
    while array_[index]:
        yield array_[index]
        index += 1


class Request:
    """A run the child is to become."""

    def __init__(self, module, path, cwd, env, stdio):
        self.module, self.path, self.cwd, self.env, self.stdio = module, path, cwd, env, stdio


class Launcher:
    def __init__(self, control, token_variable):
        self.control = control
        self.token_variable = token_variable
        self.placeholder = Placeholder(token_variable)
        self.runs = {}                      # pid -> the run's socket, until it is reaped
        self.wakeup, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        signal.set_wakeup_fd(self._wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def serve(self):
        """Answer requests until the runner goes; returns only in a child, with its Request."""
        while True:
            readable = select.select([self.control, self.wakeup], [], [])[0]
            if self.wakeup in readable:
                os.read(self.wakeup, 512)
                self.reap()
            if self.control in readable:
                request = self.accept()
                if request is False:
                    self.shut_down()
                    # Nothing is left to flush or finish, and the runner waits for this exit.
                    os._exit(0)
                if request is not None and self.fork_for(request):
                    return request

    def accept(self):
        """The next Request; None if it was malformed (answered and dropped), False at EOF."""
        size = socket.CMSG_SPACE(RUN_FDS * array.array("i").itemsize)
        data, ancillary, _flags, _address = self.control.recvmsg(1, size)
        if not data:
            return False
        fds = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if len(fds) != RUN_FDS:
            for fd in fds:
                os.close(fd)
            return None
        run = socket.socket(fileno=fds[0])
        try:
            fields = self.read_request(run)
            return Request(fields["module"], fields["path"], fields["cwd"], fields["env"],
                           (run, *fds[1:]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.answer(run, f"error: the request could not be read: {exc}")
            run.close()
            for fd in fds[1:]:
                os.close(fd)
            return None

    @staticmethod
    def read_request(run):
        run.settimeout(REQUEST_TIMEOUT_S)
        chunks, size = [], 0
        while chunk := run.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > REQUEST_LIMIT:
                raise ValueError(f"more than {REQUEST_LIMIT} bytes")
        return json.loads(b"".join(chunks))

    def fork_for(self, request):
        """Fork a child for ``request``: True in the child, once it has become the probe."""
        run, *stdio = request.stdio
        try:
            pid = os.fork()
        except OSError as exc:
            self.answer(run, f"error: fork failed: {errno.errorcode.get(exc.errno, exc)}")
            run.close()
            for fd in stdio:
                os.close(fd)
            return False
        if pid == 0:
            self.become(request)
            return True
        with contextlib.suppress(OSError):   # both sides set it: no window without a group
            os.setpgid(pid, pid)
        for fd in stdio:
            os.close(fd)
        self.runs[pid] = run
        self.answer(run, str(pid))
        return False

    def become(self, request):
        """In the child: be the process ``python -I -S -m <module>`` would have been."""
        try:
            os.setpgid(0, 0)
            self.placeholder.write(request.env[self.token_variable])
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            run, *stdio = request.stdio
            # Detached before closing: a socket object closing its number later could
            # close a descriptor the probe has opened by then under the same number.
            mine = [self.control.detach(), run.detach(), self.wakeup, self._wakeup_write]
            mine += [other.detach() for other in self.runs.values()]
            for fd in mine:
                os.close(fd)
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            for fd in stdio:
                if fd > 2:
                    os.close(fd)
            os.chdir(request.cwd)
            os.environ.clear()
            os.environ.update(request.env)
            sys.argv[:] = ["-c"]
            if sys.path[0] != request.path:
                sys.path.insert(0, request.path)
        except BaseException as exc:  # noqa: BLE001 - the child must never return to the loop
            with contextlib.suppress(OSError):
                os.write(2, f"probes._launcher: could not become {request.module}: {exc!r}\n".encode())
            os._exit(127)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is not None:
                self.answer(run, str(status))
                run.close()

    @staticmethod
    def answer(run, line):
        with contextlib.suppress(OSError):
            run.settimeout(REQUEST_TIMEOUT_S)
            run.sendall(f"{line}\n".encode())

    def shut_down(self):
        """The runner is gone: no probe of its may outlive it."""
        for pid in list(self.runs):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in list(self.runs):
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)


def main():
    control = socket.socket(fileno=int(sys.argv[1]))
    try:
        launcher = Launcher(control, token_variable=sys.argv[2])
    except (LookupError, OSError, AttributeError, ValueError) as exc:
        sys.exit(f"probes._launcher: cannot mark its probes' processes: {exc}")
    request = launcher.serve()
    # Only a child gets here: it is the probe now.
    try:
        runpy.run_module(request.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught one
        traceback.print_exc()
        code = 1
    else:
        code = 0
    finish(code)


def exit_status(code):
    """The status ``sys.exit(code)`` ends an interpreter with (a message: printed, 1)."""
    if code is None or isinstance(code, int):
        return code or 0
    with contextlib.suppress(OSError, ValueError):
        print(code, file=sys.stderr)
    return 1


def finish(code):
    """End the probe as the interpreter would, without tearing down the heap it shares
    with the launcher: freeing every object it inherited would copy each page of it
    (copy-on-write), milliseconds of work for nothing.  Threads still running are
    waited for and atexit runs, as at any interpreter's exit."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code & 0xFF)


if __name__ == "__main__":
    main()
