"""Every probe family, run here the way it runs on macOS: without Linux's constants.

macOS (and, for some, FreeBSD) has no ``socket.SO_PEERCRED``, no ``select.epoll``, ...
so a probe that reaches for one there must take its other path and still answer each
key it declares, with a value or ``"unsupported"``, never an error or a crash.  These
tests hide each Linux-only name below and run every family through the runner.

The names are hidden *before* the probe module is imported (``harness.main`` would only
hide them after): a module that reads ``socket.SO_PEERCRED`` at import time crashes on
a Mac, and must crash here too.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import sys

import pytest

from ipcmatrix import catalogue, expectations, runner
from ipcmatrix.probes import harness

# Each name, and why hiding it is what a Mac (or FreeBSD) looks like.
LINUX_ONLY = {
    "socket.SO_PEERCRED": "macOS and FreeBSD ask LOCAL_PEERCRED at level 0 instead (macos-facts B17, freebsd-facts B17)",
    "socket.SO_PASSCRED": "Linux-only credential passing (macos-facts: constants absent)",
    "socket.SCM_CREDENTIALS": "Linux-only; FreeBSD has SCM_CREDS, macOS nothing usable (B17)",
    "socket.MSG_CMSG_CLOEXEC": "absent on macOS, no kernel support (macos-facts B28)",
    "socket.SOCK_CLOEXEC": "macOS has no socket type flags (macos-facts B1, B28)",
    "socket.SOCK_NONBLOCK": "macOS has no socket type flags (macos-facts B1, B28)",
    "socket.MSG_ERRQUEUE": "Linux-only (macos-facts: constants absent)",
    "fcntl.F_SETPIPE_SZ": "pipes cannot be resized on macOS or FreeBSD (macos-facts B35, freebsd-facts B35)",
    "fcntl.F_GETPIPE_SZ": "pipes cannot be resized on macOS or FreeBSD (macos-facts B35, freebsd-facts B35)",
    "select.epoll": "Linux's event queue; the BSDs have kqueue (B32: fdpass.kinds.event_queue)",
    "os.pidfd_open": "Linux 5.3+ only (Python docs: Availability: Linux >= 5.3)",
    "os.pipe2": "macOS has no pipe2 (macos-facts B28)",
    "os.memfd_create": "not on macOS (Python docs: Availability: Linux >= 3.17)",
    "os.eventfd": "Linux-only (Python docs: Availability: Linux >= 2.6.27)",
}
# Not hidden, on purpose: socket.MSG_NOSIGNAL (macOS 11+ has it, with its own value:
# macos-facts B14), socket.SOCK_SEQPACKET (CPython exports it on macOS; it fails only
# at run time with EPROTONOSUPPORT, B1/B5) -- hiding them would test a platform that
# does not exist.
HIDE = ",".join(LINUX_ONLY)

# A family whose other-platform path is known to break: family -> the key and the reason.
# The family's owner fixes it; strict xfail then fails, to have the entry removed.
NOT_YET_ROBUST = {}

# Hide first, then import and run the family exactly as ``python -m probes.<family>``.
HIDING_PRELUDE = (
    "import os, runpy, sys\n"
    "from ipcmatrix.probes import harness\n"
    "harness.hide_constants(os.environ[harness.ENV_HIDE])\n"
    "runpy.run_module('ipcmatrix.probes.' + sys.argv[1], run_name='__main__', alter_sys=True)\n")


def hidden_command(family):
    return [sys.executable, "-I", "-c", HIDING_PRELUDE, family]


def linux_settings():
    linux = next(t for t in expectations.load_all() if t.name == "linux")
    return linux.setting("probe_deadline_s"), {
        harness.ENV_HIDE: HIDE,
        harness.ENV_BLOCK_WINDOW: str(linux.setting("block_window_s")),
        harness.ENV_BUDGET: str(max(1.0, linux.setting("probe_deadline_s") / 2)),
        "IPCMATRIX_TIMING_TOLERANCE_MS": str(linux.setting("timing_tolerance_ms"))}


def test_every_hidden_name_exists_here_so_hiding_it_changes_something():
    if sys.platform != "linux":
        pytest.skip(f"these are Linux's names; this is {sys.platform}")
    modules = {"socket": socket, "fcntl": fcntl, "select": select, "os": os}
    missing = [name for name in LINUX_ONLY
               if not hasattr(modules[name.split(".")[0]], name.split(".")[1])]
    assert not missing, f"this Python lacks {missing}: hiding them proves nothing"


def test_the_probe_process_sees_the_names_hidden_before_it_imports_anything():
    script = HIDING_PRELUDE.replace(
        "runpy.run_module('ipcmatrix.probes.' + sys.argv[1], run_name='__main__', alter_sys=True)\n",
        "import fcntl, select, socket, json\n"
        "print(json.dumps([n for n in os.environ[harness.ENV_HIDE].split(',')\n"
        "    if hasattr(sys.modules[n.split('.')[0]], n.split('.')[1])]))\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, **{harness.ENV_HIDE: HIDE}), timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def family_cases():
    for family in catalogue.families():
        reason = NOT_YET_ROBUST.get(family)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(family, marks=marks, id=family)


@pytest.mark.parametrize("family", list(family_cases()))
def test_family_answers_every_key_without_linux_only_names(family):
    deadline, settings = linux_settings()
    result = runner.run(family, deadline, command=hidden_command(family),
                        env=dict(os.environ, **settings))
    assert result.status == "ok", f"{result.status}: {result.message}\n{result.stderr_tail[-1500:]}"
    assert not result.left_processes and not result.left_files
    declared = [observation.key for observation in catalogue.observations_of(family)]
    assert declared, f"{family} declares no observation"
    problems = {}
    for key in declared:
        record = result.observations.get(key)
        if record is None:
            problems[key] = "not reported"
        elif "error" in record:
            problems[key] = record["error"]
        elif record.get("leftovers"):
            problems[key] = f"left {record['leftovers']}"
    assert not problems, json.dumps(problems, indent=1)
