"""Which platform a run is on, and the tunables that move its answers.

Tunables are read, never set: on Linux from /proc/sys, on macOS and FreeBSD with
``sysctl -n``.  One that cannot be read is recorded as None ("missing"), not guessed.
"""
from __future__ import annotations

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
    "freebsd": ["net.local.dgram.maxdgram", "net.local.dgram.recvspace",
                "net.local.stream.sendspace", "net.local.stream.recvspace",
                "kern.ipc.maxsockbuf", "kern.ipc.somaxconn"],
}

PLATFORM_NAMES = {"Linux": "linux", "Darwin": "macos", "FreeBSD": "freebsd"}


def platform_name(system):
    """The kit's name for an OS (``uname -s``): linux, macos, freebsd, or the lowercased name."""
    return PLATFORM_NAMES.get(system, system.lower())


def alias(tunable):
    """A tunable's name in formulas: its last part, ``-`` as ``_`` (``max_dgram_qlen``)."""
    return tunable.rsplit(".", 1)[-1].replace("-", "_")


def read_proc_sys(name, root="/proc/sys"):
    """A Linux sysctl from /proc/sys, as an int (or text), None when unreadable."""
    try:
        with open(os.path.join(root, *name.split(".")), encoding="ascii") as f:
            return _number(f.read())
    except OSError:
        return None


def read_sysctl(name, run=subprocess.run):
    """A BSD sysctl through ``sysctl -n``; None when the command or the name is missing."""
    command = shutil.which("sysctl") or "/sbin/sysctl"
    try:
        done = run([command, "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return _number(done.stdout)


def _number(text):
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def read_tunables(name, reader=None):
    """Every tunable the contract lists for platform ``name``, missing ones as None."""
    if reader is None:
        reader = read_proc_sys if name == "linux" else read_sysctl
    return {tunable: reader(tunable) for tunable in TUNABLES.get(name, [])}


def release_of(name, uname_release, mac_version=""):
    """The release a table's conditions compare against: kernel, macOS or FreeBSD version."""
    if name == "macos" and mac_version:
        return mac_version
    return uname_release


def version_tuple(release):
    """``"14.1-RELEASE-p3"`` -> (14, 1); ``"6.18.44-fc"`` -> (6, 18, 44)."""
    found = re.match(r"(\d+(?:\.\d+)*)", str(release))
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def identify():
    """The platform block of a report: who, where, and the tunables in force."""
    uname = os.uname()
    name = platform_name(uname.sysname)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    umask = os.umask(0)
    os.umask(umask)
    return {
        "name": name,
        "system": uname.sysname,
        "release": release_of(name, uname.release, _platform.mac_ver()[0]),
        "kernel": uname.release,
        "machine": uname.machine,
        "python": f"{sys.implementation.name} {_platform.python_version()}",
        "uid": os.getuid(),
        "root": os.geteuid() == 0,
        "umask": f"{umask:04o}",
        "rlimit_nofile": [soft, hard],
        "tunables": read_tunables(name),
    }


def formula_names(platform_block):
    """The names a formula may use for this run: tunables by alias, plus a few facts."""
    names = {alias(k): v for k, v in platform_block.get("tunables", {}).items()}
    names.update({k: v for k, v in platform_block.get("tunables", {}).items()})
    soft = (platform_block.get("rlimit_nofile") or [None])[0]
    names["rlimit_nofile"] = soft
    return names
