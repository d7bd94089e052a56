"""Which platform a run is on, which release of it, and the tunables that move its answers.

A run's *release* is what expectation tables compare ``release = ">=14"`` against: the
product version a user knows (macOS 14.5, FreeBSD 14.1), not the kernel's own number
(Darwin 23.5.0, 14.1-RELEASE-p3), which is kept apart as ``kernel``.  On Linux the two
are the same thing.

Tunables are read, never set: on Linux from /proc/sys, on macOS and FreeBSD with
``sysctl -n``.  One that cannot be read is recorded as None ("missing"), never guessed.

gVisor says it is Linux (``uname -s``), so it is told apart from inside by what it
writes in its own place: the first line of its kernel log, "Starting gVisor...", and
its fixed ``uname -v``.  Its own release cannot be learnt from inside: ``uname -r`` is
a Linux version it pretends to be (4.4.0; 4.19.0-gvisor in later releases), so a
gVisor run's ``release`` is ``""`` and the emulated version is kept as ``kernel``.

``identify`` reads the machine only through the callables it is given, so the tests
replay recorded ``uname``/``sw_vers``/``sysctl`` outputs of machines we do not have.
"""
from __future__ import annotations

import ctypes
import os
import platform as _platform
import re
import resource
import shutil
import subprocess
import sys

TUNABLES = {
    "linux": ["net.unix.max_dgram_qlen", "net.core.wmem_default", "net.core.rmem_default",
              "net.core.wmem_max", "net.core.rmem_max", "net.core.somaxconn",
              "fs.pipe-max-size"],
    "macos": ["net.local.dgram.maxdgram", "net.local.dgram.recvspace",
              "net.local.stream.sendspace", "net.local.stream.recvspace",
              "kern.ipc.maxsockbuf", "kern.ipc.somaxconn", "kern.ipc.soqlimitcompat"],
    # kern.ipc.somaxconn is FreeBSD's old, hidden name of kern.ipc.soacceptqueue
    # (sys/kern/uipc_socket.c, sysctl_somaxconn); both are read so neither is assumed.
    "freebsd": ["net.local.dgram.maxdgram", "net.local.dgram.recvspace",
                "net.local.stream.sendspace", "net.local.stream.recvspace",
                "kern.ipc.maxsockbuf", "kern.ipc.somaxconn", "kern.ipc.soacceptqueue"],
}

# gVisor reads Linux's sysctls from the same /proc/sys; those it lacks are None.
TUNABLES["gvisor"] = TUNABLES["linux"]

PLATFORM_NAMES = {"Linux": "linux", "Darwin": "macos", "FreeBSD": "freebsd"}

# What gVisor shows of itself.  The uname version is fixed in its syscall tables
# (pkg/sentry/syscalls/linux/linux64.go, "Version"); the first log line is written by
# pkg/sentry/kernel/syslog.go.  Neither names gVisor's release.
GVISOR_SYSTEM = "gVisor"
GVISOR_UNAME_VERSION = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
GVISOR_LOG_START = "Starting gVisor..."
SYSLOG_ACTION_READ_ALL = 3   # <linux/syslog.h>; reads without clearing
KERNEL_LOG_BYTES = 4096      # the first line is all we need

SYSCTL_TIMEOUT_S = 5
# Where sysctl lives when PATH does not say: /usr/sbin on macOS, /sbin on FreeBSD.
SYSCTL_DIRS = ("/usr/sbin", "/sbin")


def platform_name(system):
    """The kit's name for an OS (``uname -s``): linux, macos, freebsd, or the lowercased name."""
    return PLATFORM_NAMES.get(system, system.lower())


def alias(tunable):
    """A tunable's name in formulas: its last part, ``-`` as ``_`` (``max_dgram_qlen``)."""
    return tunable.rsplit(".", 1)[-1].replace("-", "_")


def _number(text):
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


# --- reading tunables -------------------------------------------------------------------

def read_proc_sys(name, root="/proc/sys"):
    """A Linux sysctl from /proc/sys, as an int (or text), None when unreadable."""
    try:
        with open(os.path.join(root, *name.split(".")), encoding="ascii") as f:
            return _number(f.read())
    except (OSError, UnicodeDecodeError):
        return None


def sysctl_command():
    """The sysctl binary's path (``"sysctl"`` if none is found: running it then fails)."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SYSCTL_DIRS])
    return shutil.which("sysctl", path=search) or "sysctl"


def read_sysctls(names, run=subprocess.run):
    """Each of ``names`` through ``sysctl -n``, as int or text; None for any it cannot read.

    One call asks for all of them.  Its answer is used only when every name printed one
    line and sysctl succeeded: FreeBSD's sysctl warns about an unknown name and goes on
    (exit status 1), so its output lines no longer line up with the names; then each
    name is asked alone and an unknown one is None.  No sysctl at all makes every
    value None, without retrying name by name.
    """
    names = list(names)
    if not names:
        return {}
    command = sysctl_command()
    together = _run_sysctl(run, [command, "-n", *names])
    if together is None:
        return dict.fromkeys(names)
    code, lines = together
    if code == 0 and len(lines) == len(names):
        return {name: _number(line) for name, line in zip(names, lines)}
    values = {}
    for name in names:
        alone = _run_sysctl(run, [command, "-n", name])
        if alone is None:
            return {**values, **dict.fromkeys(n for n in names if n not in values)}
        code, lines = alone
        values[name] = _number(lines[0]) if code == 0 and len(lines) == 1 else None
    return values


def _run_sysctl(run, argv):
    """(exit status, non-empty output lines), or None when sysctl cannot be run at all."""
    try:
        done = run(argv, capture_output=True, text=True, timeout=SYSCTL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    return done.returncode, [line for line in (done.stdout or "").splitlines() if line.strip()]


def read_sysctl(name, run=subprocess.run):
    """One BSD sysctl through ``sysctl -n``; None when the command or the name is missing."""
    return read_sysctls([name], run)[name]


def read_tunables(name, run=subprocess.run, proc_sys="/proc/sys"):
    """Every tunable the contract lists for platform ``name``, missing ones as None."""
    names = TUNABLES.get(name, [])
    if name in ("linux", "gvisor"):
        return {tunable: read_proc_sys(tunable, proc_sys) for tunable in names}
    return read_sysctls(names, run)


# --- gVisor, which says it is Linux -----------------------------------------------------

def read_kernel_log(size=KERNEL_LOG_BYTES):
    """The start of the kernel log through syslog(2) (klogctl), ``""`` when it cannot be read."""
    try:
        klogctl = ctypes.CDLL(None, use_errno=True).klogctl  # libc, loaded already
    except (OSError, AttributeError, TypeError):
        return ""
    buffer = ctypes.create_string_buffer(size)
    count = klogctl(SYSLOG_ACTION_READ_ALL, buffer, size)
    return buffer.raw[:count].decode("utf-8", "replace") if count > 0 else ""


def gvisor_signs(system, kernel_log=read_kernel_log):
    """The signs that this "Linux" is gVisor, as a list of what was seen (empty: it is not).

    The kernel log is read only where ``uname`` already looks like gVisor, so a run on a
    real Linux never reads the host's log.
    """
    if system.sysname != "Linux":
        return []
    signs = []
    if getattr(system, "version", "") == GVISOR_UNAME_VERSION:
        signs.append(f"uname -v {GVISOR_UNAME_VERSION!r}")
    if "gvisor" in system.release.lower():
        signs.append(f"uname -r {system.release!r}")
    if not signs:
        return []
    first_line = (kernel_log() or "").partition("\n")[0]
    if GVISOR_LOG_START in first_line:
        signs.insert(0, f"kernel log {first_line.strip()!r}")
    return signs


# --- the release tables compare against ---------------------------------------------------

def version_tuple(release):
    """``"14.1-RELEASE-p3"`` -> (14, 1); ``"6.18.44-fc"`` -> (6, 18, 44)."""
    found = re.match(r"(\d+(?:\.\d+)*)", str(release))
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def _numeric_prefix(release):
    return ".".join(str(part) for part in version_tuple(release))


def release_of(name, kernel_release, mac_version=""):
    """The release a table's conditions compare against, from the kernel's and macOS's own.

    macOS: the product version (``"14.5"``), never Darwin's ``23.5.0``; ``""`` when it
    is not known.  FreeBSD: ``"14.1-RELEASE-p3"`` -> ``"14.1"``.  Others: the kernel's.
    """
    if name == "macos":
        return mac_version or ""
    if name == "freebsd":
        return _numeric_prefix(kernel_release)
    return kernel_release


def macos_version(mac_ver=_platform.mac_ver, run=subprocess.run):
    """The macOS product version (``"14.5"``), or ``""`` when neither source gives one.

    ``platform.mac_ver`` reads SystemVersion.plist.  A Python built against an SDK older
    than macOS 11 is shown the compatibility version 10.16 instead, so that answer (and
    an empty one) is checked with ``sw_vers -productVersion``.
    """
    try:
        version = mac_ver()[0] or ""
    except (OSError, ValueError, IndexError):
        version = ""
    if version and not version.startswith("10.16"):
        return version
    try:
        done = run(["sw_vers", "-productVersion"], capture_output=True, text=True,
                   timeout=SYSCTL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return version
    answer = (done.stdout or "").strip()
    if done.returncode == 0 and version_tuple(answer):
        return answer
    return version


# --- the platform block of a report -------------------------------------------------------

def identify(uname=os.uname, mac_ver=_platform.mac_ver, run=subprocess.run,
             proc_sys="/proc/sys", kernel_log=read_kernel_log):
    """The platform block of a report: who, where, which release, and the tunables in force.

    ``uname`` returns an object with ``sysname``, ``release`` and ``machine`` (like
    ``os.uname()``); ``mac_ver`` is like ``platform.mac_ver``; ``run`` like
    ``subprocess.run`` (it runs ``sysctl`` and ``sw_vers``); ``proc_sys`` is where
    Linux's sysctls are; ``kernel_log`` returns the start of the kernel log.  The tests
    pass recorded answers of other machines.
    """
    system = uname()
    name = platform_name(system.sysname)
    sysname, signs = system.sysname, gvisor_signs(system, kernel_log)
    if signs:
        name, sysname = "gvisor", GVISOR_SYSTEM
    mac_version = macos_version(mac_ver, run) if name == "macos" else ""
    # Rosetta runs x86_64 code on arm64 Macs; it is the only translation there is.
    translated = (name == "macos" and system.machine == "x86_64"
                  and read_sysctl("sysctl.proc_translated", run) == 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    umask = current_umask()
    block = {
        "name": name,
        "system": sysname,
        "release": "" if signs else release_of(name, system.release, mac_version),
        "kernel": system.release,
        # Under Rosetta uname says x86_64, but the kernel (and its mbuf sizes) is arm64.
        "machine": "arm64" if translated else system.machine,
        "translated": translated,
        "python": f"{sys.implementation.name} {_platform.python_version()}",
        "uid": os.getuid(),
        "root": os.geteuid() == 0,
        "umask": f"{umask:04o}",
        "rlimit_nofile": [soft, hard],
        "tunables": read_tunables(name, run, proc_sys),
        "ipc_tunables": read_ipc_tunables(name, run, proc_sys),
    }
    if signs:
        block["gvisor"] = {"identified_by": signs, "release_known": False,
                           "uname_version": getattr(system, "version", ""),
                           "note": "gVisor's release cannot be learnt from inside the sandbox: "
                                   "uname and /proc/version show the Linux it emulates"}
    return block


def current_umask():
    """This process's umask (there is no call that reads it without setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def formula_names(platform_block):
    """The names a formula may use for this run: tunables by alias, plus a few facts."""
    tunables = {**platform_block.get("tunables", {}), **platform_block.get("ipc_tunables", {})}
    aliases = [alias(k) for k in tunables]
    # An alias two tunables share (BSD recvspace: dgram and stream) must be spelled out
    # in full, so a formula that uses it fails visibly instead of reading the wrong one.
    names = {alias(k): v for k, v in tunables.items() if aliases.count(alias(k)) == 1}
    names.update(tunables)
    soft = (platform_block.get("rlimit_nofile") or [None])[0]
    names["rlimit_nofile"] = soft
    return names


# --- System V IPC and POSIX message-queue limits ---------------------------------------------

# What sizes System V objects and message queues, as each platform names it.  Formulas use
# the last part (``shmmax``, ``msgmnb``, ``msg_default``).  Linux: ipc/shm.c, ipc/msg.c,
# ipc/sem.c, ipc/mqueue.c (kernel.sem is four numbers: SEMMSL SEMMNS SEMOPM SEMMNI, kept as
# text).  macOS: bsd/kern/sysv_shm.c and sysv_sem.c export kern.sysv.*; its message limits
# are compiled in and not exported.  FreeBSD: sys/kern/sysv_{shm,msg,sem}.c kern.ipc.*,
# and sys/kern/uipc_mqueue.c kern.mqueue.* (present only with the mqueuefs module loaded).
IPC_TUNABLES = {
    "linux": ["kernel.shmmax", "kernel.shmall", "kernel.shmmni", "kernel.msgmnb",
              "kernel.msgmax", "kernel.msgmni", "kernel.sem", "fs.mqueue.msg_max",
              "fs.mqueue.msgsize_max", "fs.mqueue.msg_default", "fs.mqueue.msgsize_default",
              "fs.mqueue.queues_max"],
    "macos": ["kern.sysv.shmmax", "kern.sysv.shmmin", "kern.sysv.shmmni", "kern.sysv.shmseg",
              "kern.sysv.shmall", "kern.sysv.semmni", "kern.sysv.semmns", "kern.sysv.semmnu",
              "kern.sysv.semmsl", "kern.sysv.semume"],
    "freebsd": ["kern.ipc.shmmax", "kern.ipc.shmmin", "kern.ipc.shmmni", "kern.ipc.shmseg",
                "kern.ipc.shmall", "kern.ipc.msgmax", "kern.ipc.msgmnb", "kern.ipc.msgmni",
                "kern.ipc.msgssz", "kern.ipc.msgseg", "kern.ipc.msgtql", "kern.ipc.semmni",
                "kern.ipc.semmns", "kern.ipc.semmsl", "kern.ipc.semopm", "kern.ipc.semvmx",
                "kern.ipc.shm_allow_removed", "kern.mqueue.maxmsg", "kern.mqueue.maxmsgsize",
                "kern.mqueue.maxmq"],
}
# gVisor serves Linux's names from its own /proc/sys (those it implements).
IPC_TUNABLES["gvisor"] = IPC_TUNABLES["linux"]


def read_ipc_tunables(name, run=subprocess.run, proc_sys="/proc/sys"):
    """The System V and message-queue limits of platform ``name``; unreadable ones None."""
    names = IPC_TUNABLES.get(name, [])
    if name in ("linux", "gvisor"):
        return {tunable: read_proc_sys(tunable, proc_sys) for tunable in names}
    return read_sysctls(names, run)
