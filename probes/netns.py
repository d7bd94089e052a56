"""A fresh network namespace: what an AF_UNIX program sees in a container's own netns.

    if (fork() == 0) {
        unshare(CLONE_NEWUSER | CLONE_NEWNET);   /* `unshare -rn`; CLONE_NEWNET alone as root */
        connect(fd, "\\0name", ...);            /* abstract names belong to a netns */
    }

Linux keeps abstract socket names and the net.unix sysctls per network namespace, and a
new namespace starts from the kernel's defaults, not the host's settings (a systemd host
raises max_dgram_qlen to 512; a container's fresh netns has 10).  Only a forked child
enters the namespace, so the probe itself, and everything it leaves, stays where it was.
Where the platform has no network namespaces, or may not make one (unprivileged user
namespaces turned off), the answer is "unsupported" with the reason.
"""
import os
import shutil
import socket
import sys

from . import _bulk, _libc, dgram, harness
from .names import connect_outcome
from .harness import OK, UNSUPPORTED, Measured, observation, outcome

# <linux/sched.h>
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CHILD_TIMEOUT = 5.0
MAX_DGRAM_QLEN = "/proc/sys/net/unix/max_dgram_qlen"


class NoNamespace(Exception):
    """This process may not make a network namespace here; the message says why."""


def enter_new_netns():
    """unshare a new network namespace (with a user namespace unless root); how it was done."""
    if not sys.platform.startswith("linux"):
        raise NoNamespace(f"{sys.platform} has no network namespaces (unshare(2) is Linux's)")
    attempts = ([("CLONE_NEWNET", CLONE_NEWNET)] if os.geteuid() == 0 else []) + \
        [("CLONE_NEWUSER|CLONE_NEWNET", CLONE_NEWUSER | CLONE_NEWNET)]
    refused = []
    for name, flags in attempts:
        try:
            _libc.unshare(flags)
        except _libc.Missing:
            raise NoNamespace("the C library has no unshare()") from None
        except OSError as exc:
            refused.append(f"unshare({name}): {harness.errno_name(exc)}")
            continue
        return name
    raise NoNamespace("; ".join(refused) + " (unprivileged user namespaces may be turned off)")


def in_new_netns(fn, *args, timeout=CHILD_TIMEOUT):
    """Run ``fn`` in a forked child inside a fresh netns: ("ok", how, value) or
    ("unsupported", reason, None)."""
    def child():
        try:
            how = enter_new_netns()
        except NoNamespace as refused:
            return {"unsupported": str(refused)}
        return {"how": how, "value": fn(*args)}

    # The child works in a directory of its own: if it is killed at its deadline, what it
    # bound there is removed with the directory.
    os.mkdir("n")
    try:
        result = harness.in_child(child, timeout=timeout, setup=lambda: os.chdir("n"))
    finally:
        shutil.rmtree("n", ignore_errors=True)
    if result.error:
        raise harness.Unmeasurable(f"the child in the new netns failed: {result.error}")
    if "unsupported" in result.value:
        return UNSUPPORTED, result.value["unsupported"], None
    return OK, result.value["how"], result.value["value"]


@observation("names.abstract.netns_scoped")
def abstract_netns_scoped():
    """A process in another network namespace cannot reach an abstract socket (ECONNREFUSED)."""
    name = f"\0ipcmatrix-netns-{os.getpid()}-{os.urandom(3).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        bound = outcome(server.bind, name)
        if bound != OK:
            return Measured(UNSUPPORTED, abstract_bind=bound)
        server.listen(4)
        # The control: a child in our own namespace reaches the name.
        same = harness.in_child(connect_outcome, name, timeout=CHILD_TIMEOUT)
        if same.value != OK:
            raise harness.Unmeasurable(f"even a child in this netns could not connect: "
                                       f"{same.value or same.error}")
        entered, how, other = in_new_netns(connect_outcome, name)
    if entered != OK:
        return Measured(UNSUPPORTED, reason=how)
    return Measured(other != OK, from_new_netns=other, from_same_netns=same.value, entered_by=how)


def read_tunable(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None  # absent (gVisor has no /proc/sys/net/unix): recorded as missing


def capacity_here():
    """In the new netns: dgram's own unconnected-capacity probe, and the netns's qlen.

    The one thing borrowed from the dgram family is its count of an unconnected queue, so
    both keys always count the same way (dgram is imported as a module: a function imported
    by name could be taken for an observation of this family).
    """
    measured = dgram.count_unconnected()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    return {"count": measured.value, "detail": measured.detail,
            "max_dgram_qlen": read_tunable(MAX_DGRAM_QLEN), "sndbuf": sndbuf}


@observation("dgram.queue.capacity_new_netns")
def capacity_new_netns():
    """Unconnected dgram capacity in a fresh netns follows its defaults (max_dgram_qlen 10)."""
    # The count is a queue filled in bulk, bounded by _bulk's own time bound: the child gets
    # that, and the usual allowance for the rest.
    entered, how, found = in_new_netns(capacity_here, timeout=CHILD_TIMEOUT + _bulk.time_bound())
    if entered != OK:
        return Measured(UNSUPPORTED, reason=how)
    return Measured(found["count"], max_dgram_qlen_in_netns=found["max_dgram_qlen"],
                    host_max_dgram_qlen=read_tunable(MAX_DGRAM_QLEN),
                    sndbuf_in_netns=found["sndbuf"], entered_by=how, **found["detail"])


if __name__ == "__main__":
    harness.main()
