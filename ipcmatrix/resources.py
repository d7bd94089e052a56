"""Which resource ran out: an OSError or MemoryError turned into a sentence naming it and its limit.

A run started under ``ulimit -n 64``, ``ulimit -u 16``, ``ulimit -v 500000`` or with a full
/tmp fails deep inside pytest or a probe; the person running it needs the resource and the
knob, not the traceback.
"""
from __future__ import annotations

import errno
import resource

# errno -> (what ran out, the limit that governs it)
_RESOURCES = {
    errno.EMFILE: ("open files for this process", "RLIMIT_NOFILE", resource.RLIMIT_NOFILE, "ulimit -n"),
    errno.ENFILE: ("open files system-wide", None, None, "fs.file-max"),
    errno.EAGAIN: ("processes for this user (fork failed)", "RLIMIT_NPROC",
                   getattr(resource, "RLIMIT_NPROC", None), "ulimit -u"),
    errno.ENOMEM: ("memory", "RLIMIT_AS", getattr(resource, "RLIMIT_AS", None), "ulimit -v"),
    errno.ENOSPC: ("disk space", None, None, "df"),
    errno.EDQUOT: ("disk quota", None, None, "quota"),
}


def _limit(number):
    """The soft limit as ``ulimit`` shows it (RLIMIT_AS in KiB), or "" when there is none."""
    if number is None:
        return ""
    soft, _ = resource.getrlimit(number)
    if soft == resource.RLIM_INFINITY:
        return "unlimited"
    return f"{soft // 1024} KiB" if number == getattr(resource, "RLIMIT_AS", None) else str(soft)


def ran_out(exc):
    """The sentence naming the resource ``exc`` says ran out, or "" when it is not such an error."""
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return (f"ran out of memory or processes: a thread could not start (limits: ulimit -v = "
                f"{_limit(_RESOURCES[errno.ENOMEM][2])}, ulimit -u = {_limit(_RESOURCES[errno.EAGAIN][2])})")
    if isinstance(exc, ImportError) and "failed to map segment" in str(exc):
        exc = MemoryError(str(exc))  # the dynamic loader could not map a module: no memory
    if isinstance(exc, MemoryError):
        return f"ran out of memory (limit: ulimit -v = {_limit(_RESOURCES[errno.ENOMEM][2])})"
    if not isinstance(exc, OSError) or exc.errno not in _RESOURCES:
        return ""
    what, _, number, knob = _RESOURCES[exc.errno]
    where = f" writing {exc.filename}" if exc.filename and exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    limit = _limit(number)
    hint = f" (limit: {knob} = {limit})" if limit else f" (see {knob})"
    return f"ran out of {what}{where}: {errno.errorcode[exc.errno]}{hint}"


def find_in(exc):
    """The first resource error in ``exc``'s chain of causes, as ``ran_out`` words it, or ""."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        words = ran_out(exc)
        if words:
            return words
        exc = exc.__cause__ or exc.__context__
    return ""


# A run keeps each probe's output and the session's records in the temporary directory, and
# every probe works in a private directory under /tmp: a few hundred KiB in all.
TEMP_SPACE_NEEDED = 1 << 20


def short_of_space(directories=None):
    """The sentence saying which temporary directory lacks the space a run needs, or ""."""
    import os
    import tempfile
    for directory in directories or dict.fromkeys([tempfile.gettempdir(), "/tmp"]):
        try:
            stat = os.statvfs(directory)
        except OSError:
            continue
        free = stat.f_bavail * stat.f_frsize
        if free < TEMP_SPACE_NEEDED:
            return (f"ran out of disk space in {directory}: {free // 1024} KiB free, a run needs "
                    f"about {TEMP_SPACE_NEEDED >> 10} KiB there (ENOSPC): free some space there")
    return ""


# Descriptors the controller holds at once: each probe measured side by side keeps its stdout
# and stderr files, a pidfd and the exec pipe; each xdist worker its pipes; pytest its own.
FDS_PER_PROBE = 5
FDS_PER_WORKER = 6
FDS_BASE = 16


def short_of_fds(probes_side_by_side, workers):
    """The sentence saying the open-file limit is too low for this run, or "" (tried, not
    computed: the descriptors are opened, then closed)."""
    import os
    needed = FDS_BASE + FDS_PER_PROBE * probes_side_by_side + FDS_PER_WORKER * workers
    opened = []
    try:
        for _ in range(needed):
            opened.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        if probes_side_by_side <= 1 and not workers:
            return (f"{ran_out(exc)}: a run opens about {needed} files at once even with "
                    f"one probe at a time; raise the limit (ulimit -n 1024)")
        return (f"{ran_out(exc)}: this run opens about {needed} files at once "
                f"({probes_side_by_side} probes side by side, {workers} workers); "
                f"raise the limit (ulimit -n 1024) or run fewer families (-k)")
    finally:
        for fd in opened:
            os.close(fd)
    return ""


EARLY_START_ADDRESS_SPACE = 4 << 30   # bytes: below this, probes are not started before pytest


def address_space_limited():
    """Whether ``ulimit -v`` leaves too little room to start probes while pytest loads:
    twenty waiting threads and pytest's imports at once do not fit in a few hundred MiB."""
    number = getattr(resource, "RLIMIT_AS", None)
    if number is None:
        return False
    soft, _ = resource.getrlimit(number)
    return soft != resource.RLIM_INFINITY and soft < EARLY_START_ADDRESS_SPACE
