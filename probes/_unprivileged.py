"""Acting as an unprivileged user: what permission checks look like to everyone but root.

Root passes every file-permission check, so a probe run as root that wants to see a
permission error forks a child that gives up root for good (``os.setgroups([])``,
``os.setgid``, ``os.setuid`` — in that order, the only order that works) before it
makes the call.  A probe that already runs unprivileged just forks the child.

The child cannot follow a path through the runner's private 0700 directories once it
has dropped, so it enters the directory it needs *before* dropping and then uses a
relative name: only that one directory has to be searchable by others.
"""
from __future__ import annotations

import functools
import os

from . import harness

FALLBACK_NOBODY = 65534  # nobody/nogroup on Linux and FreeBSD; macOS's nobody is -2


def as_unsigned(ident):
    """uid_t/gid_t are unsigned 32-bit: macOS's nobody (-2) is 4294967294."""
    return ident % (1 << 32)


def nobody():
    """The (uid, gid) to become: the ``nobody`` account where there is one, else 65534."""
    try:
        import pwd
        entry = pwd.getpwnam("nobody")
        return as_unsigned(entry.pw_uid), as_unsigned(entry.pw_gid)
    except (ImportError, KeyError):
        return FALLBACK_NOBODY, FALLBACK_NOBODY


def drop_to(uid, gid):
    """Give up root for good in this process: supplementary groups, then gid, then uid."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def whoami():
    return {"uid": os.geteuid(), "gid": os.getegid(), "pid": os.getpid()}


class CannotDrop(harness.Unmeasurable):
    """This root process cannot become an unprivileged user here; the message says why."""


@functools.cache
def _drop_trial():
    uid, gid = nobody()
    result = harness.in_child(whoami, setup=lambda: drop_to(uid, gid), timeout=5.0)
    if result.error:
        return uid, gid, f"could not drop to uid {uid} gid {gid}: {result.error}"
    if result.value["uid"] != uid:
        return uid, gid, f"setuid({uid}) left the child as uid {result.value['uid']}"
    return uid, gid, None


def dropped_identity():
    """(uid, gid) a root probe can drop to; raises CannotDrop where the drop is refused.

    Tried once, in a throw-away child: a container without the nobody uid mapped, or a
    root without CAP_SETUID, refuses it.
    """
    uid, gid, refused = _drop_trial()
    if refused:
        raise CannotDrop(refused)
    return uid, gid


def unprivileged_setup(directory):
    """A Child ``setup``: enter ``directory``, then (when root) become nobody.

    Raises CannotDrop when the probe is root and cannot drop; the caller decides
    whether that makes its answer "unsupported".
    """
    if os.geteuid() != 0:
        return lambda: os.chdir(directory)
    uid, gid = dropped_identity()

    def setup():
        os.chdir(directory)
        drop_to(uid, gid)
    return setup


def run_unprivileged(fn, directory, *args, timeout=5.0):
    """Run ``fn(*args)`` in a child that is in ``directory`` and not root; its return value."""
    result = harness.in_child(fn, *args, setup=unprivileged_setup(directory), timeout=timeout)
    if result.error:
        raise harness.Unmeasurable(f"unprivileged child failed: {result.error}")
    return result.value
