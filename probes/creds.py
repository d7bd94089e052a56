"""Peer credentials over AF_UNIX: who is at the other end of a connection.

Each OS has its own mechanism and each is looked up at call time, so that tests can hide
Linux's constants and check what the probe does where they do not exist:

- Linux: ``getsockopt(fd, SOL_SOCKET, SO_PEERCRED)`` gives ``struct ucred {pid, uid, gid}``.
- macOS and FreeBSD: ``getsockopt(fd, SOL_LOCAL = 0, LOCAL_PEERCRED = 1)`` gives
  ``struct xucred {cr_version, cr_uid, cr_ngroups, cr_groups[16]}`` (FreeBSD >= 13 adds
  cr_pid after the groups).  Level 0 is not SOL_SOCKET: at SOL_SOCKET, option 1 is
  SO_DEBUG (freebsd-facts B17).  Python exports neither SOL_LOCAL nor, always,
  LOCAL_PEERCRED, so both come from <sys/un.h> (macos-facts B17, "LOCAL_PEERCRED from
  Python"); on Linux level 0 is SOL_IP, so the platform decides, not a constant.
- ``SCM_CREDENTIALS`` (Linux): the receiver sets SO_PASSCRED and every message arrives
  with the sender's {pid, uid, gid}.
- ``SCM_CREDS`` (FreeBSD): the sender attaches an empty ``struct cmsgcred`` and the kernel
  fills in its pid, uids, gid and groups.
- The peer's pid: ucred's pid (Linux), xucred's cr_pid (FreeBSD 13+), LOCAL_PEERPID
  (macOS, whose xucred has none), asked on both ends of one connection, and again once
  the peer has exited.

The peer is a forked child, not a socketpair: a socketpair reports its creator, so only a
real second process shows that the answer is the peer's.  Run as root, the child also
drops to nobody, so the uid the mechanism reports cannot be ours by accident.
"""
import os
import select
import shutil
import socket
import struct
import sys

from . import _unprivileged, harness
from .harness import OK, UNSUPPORTED, Measured, experiment, observation

CONNECT_WINDOW = harness.scaled(2.0)       # s: how long a receive that blocks is given to say so
# A bound on waiting for the peer child to connect, get its answer or exit: the wait ends as
# soon as it does, so the bound costs nothing, and under gVisor with twenty families beside
# it the child took over 2 s to exit.
CHILD_TIMEOUT = harness.scaled(5.0)
UCRED = struct.Struct("@iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid (Linux)

# <sys/un.h> on macOS (xnu bsd/sys/un.h#L82-L94) and FreeBSD: SOL_LOCAL 0, LOCAL_PEERCRED 1.
SOL_LOCAL = 0
LOCAL_PEERCRED = 1
# struct xucred (xnu bsd/sys/ucred.h#L203-L208; FreeBSD sys/sys/ucred.h): u_int cr_version;
# uid_t cr_uid; short cr_ngroups; gid_t cr_groups[XU_NGROUPS = 16]; 76 bytes with padding.
XUCRED = struct.Struct("@IIh16I")
XUCRED_VERSION = 0
XU_NGROUPS = 16
# FreeBSD >= 13 follows with union { void *_cr_unused1; pid_t cr_pid; }, pointer-aligned.
XUCRED_PID_OFFSET = -(-XUCRED.size // struct.calcsize("P")) * struct.calcsize("P")
XUCRED_ROOM = XUCRED_PID_OFFSET + struct.calcsize("P")
LOCAL_PEERCRED_SYSTEMS = ("darwin", "freebsd")
# macOS only (xnu bsd/sys/un.h): LOCAL_PEERPID 2 at SOL_LOCAL gives the peer's pid_t.  On
# FreeBSD option 2 is LOCAL_CREDS, so the platform decides here too.
LOCAL_PEERPID = 2
# struct cmsgcred (FreeBSD sys/sys/socket.h): pid_t cmcred_pid; uid_t cmcred_uid, cmcred_euid;
# gid_t cmcred_gid; short cmcred_ngroups; gid_t cmcred_groups[CMGROUP_MAX = 16]: 84 bytes.
CMSGCRED = struct.Struct("@iIIIh16I")


# --- reading a peer's credentials, per platform --------------------------------------------------

def parse_ucred(raw):
    pid, uid, gid = UCRED.unpack(raw[:UCRED.size])
    return {"pid": pid, "uid": uid, "gid": gid}


def parse_xucred(raw):
    """struct xucred as LOCAL_PEERCRED returns it; ValueError unless it is one."""
    if len(raw) < XUCRED.size:
        raise ValueError(f"{len(raw)} bytes is shorter than struct xucred ({XUCRED.size})")
    version, uid, ngroups, *groups = XUCRED.unpack(raw[:XUCRED.size])
    if version != XUCRED_VERSION or not 0 <= ngroups <= XU_NGROUPS:
        raise ValueError(f"not a struct xucred: cr_version {version}, cr_ngroups {ngroups}")
    creds = {"uid": uid, "groups": groups[:ngroups]}
    if len(raw) >= XUCRED_PID_OFFSET + struct.calcsize("i"):  # FreeBSD's cr_pid
        creds["pid"] = struct.unpack_from("@i", raw, XUCRED_PID_OFFSET)[0]
    return creds


def read_so_peercred(sock):
    option = harness.constant("SO_PEERCRED")
    return parse_ucred(sock.getsockopt(socket.SOL_SOCKET, option, UCRED.size))


def read_local_peercred(sock):
    option = harness.constant("LOCAL_PEERCRED") or LOCAL_PEERCRED
    return parse_xucred(sock.getsockopt(SOL_LOCAL, option, XUCRED_ROOM))


def mechanisms():
    """The mechanisms this platform offers, as (name, reader), in the order to try them."""
    found = []
    if harness.constant("SO_PEERCRED") is not None:
        found.append(("SO_PEERCRED", read_so_peercred))
    # Only where level 0 means SOL_LOCAL: elsewhere getsockopt(0, 1) reads another option.
    if sys.platform.startswith(LOCAL_PEERCRED_SYSTEMS):
        found.append(("LOCAL_PEERCRED", read_local_peercred))
    return found


def read_local_peerpid(sock):
    option = harness.constant("LOCAL_PEERPID") or LOCAL_PEERPID
    return struct.unpack("@i", sock.getsockopt(SOL_LOCAL, option, struct.calcsize("@i")))[0]


def pid_mechanisms():
    """Where this platform reports a peer's pid, as (name, reader giving the pid)."""
    found = [(name, lambda sock, read=read: read(sock).get("pid"))
             for name, read in mechanisms()]
    if sys.platform.startswith("darwin"):
        found.append(("LOCAL_PEERPID", read_local_peerpid))
    return found


def peer_pid(sock):
    """{"mechanism", "pid"} from the first mechanism that gives a pid, else what each gave."""
    tried = {}
    for name, read in pid_mechanisms():
        try:
            pid = read(sock)
        except (OSError, ValueError, struct.error) as exc:
            tried[name] = harness.errno_name(exc) if isinstance(exc, OSError) else str(exc)
            continue
        if pid is not None:
            return {"mechanism": name, "pid": pid}
        tried[name] = "no pid field"
    return {"mechanism": None, "pid": None, "tried": tried}


def peer_credentials(sock):
    """(mechanism, credentials) from the first mechanism that works, or ("unsupported", None).

    The third item says what each mechanism tried gave, for the report.
    """
    tried = {}
    for name, read in mechanisms():
        try:
            return name, read(sock), tried
        except (OSError, ValueError, struct.error) as exc:
            tried[name] = harness.errno_name(exc) if isinstance(exc, OSError) else str(exc)
    return UNSUPPORTED, None, tried


# --- the peer: a child that connects ------------------------------------------------------------

def connect_and_wait(name):
    """Run in the child: connect, read the listener's pid, stay until the parent says go
    (a byte, or EOF), say who we were."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        harness.set_send_timeout(sock, CHILD_TIMEOUT)
        sock.connect(name)
        seen = peer_pid(sock)
        harness.set_recv_timeout(sock, CHILD_TIMEOUT)
        sock.recv(1)
    return {**_unprivileged.whoami(), "saw_listener": seen}


def child_setup(directory):
    """Enter ``directory``; drop to nobody if we are root and may; say which happened."""
    try:
        return _unprivileged.unprivileged_setup(directory), True
    except _unprivileged.CannotDrop:
        return (lambda: os.chdir(directory)), False


@experiment
def peer():
    """A child connects to our listener; we read its credentials on the accepted socket."""
    os.mkdir("d")
    os.chmod("d", 0o711)  # the child enters it before it drops; nobody may search, not list
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("d/s")
        os.chmod("d/s", 0o777)  # connect needs write permission on the file
        server.listen(1)
        setup, dropped = child_setup(os.path.abspath("d"))
        exited_r, exited_w = os.pipe()  # EOF on exited_r: the child is gone
        try:
            with harness.Child(connect_and_wait, "s", setup=setup) as child:
                os.close(exited_w)
                exited_w = None
                ready = select.select([server, exited_r], [], [], CHILD_TIMEOUT)[0]
                if server not in ready:
                    result = child.wait(CHILD_TIMEOUT)
                    raise harness.Unmeasurable(f"the child never connected: "
                                               f"{result.error if result else 'still running'}")
                with server.accept()[0] as accepted:
                    mechanism, creds, tried = peer_credentials(accepted)
                    saw_connector = peer_pid(accepted)
                    accepted.send(b"x")  # go: the child closes and exits
                    result = child.wait(CHILD_TIMEOUT)
                    # the peer has exited and been reaped: what is left of its credentials
                    after_exit = read_after_exit(accepted, mechanism)
        finally:
            os.close(exited_r)
            if exited_w is not None:
                os.close(exited_w)
        if result is None or result.error:
            raise harness.Unmeasurable(f"the child failed: {result.error if result else 'hung'}")
        return {"mechanism": mechanism, "creds": creds, "tried": tried, "peer": result.value,
                "peer_dropped_root": dropped and os.geteuid() == 0,
                "saw_connector": saw_connector, "after_exit": after_exit}
    finally:
        server.close()
        shutil.rmtree("d", ignore_errors=True)


def read_after_exit(sock, mechanism):
    """The credentials (and pid) the mechanism gives once the peer is gone, or its errno."""
    readers = dict(mechanisms())
    if mechanism not in readers:
        return None
    try:
        creds = readers[mechanism](sock)
    except (OSError, ValueError, struct.error) as exc:
        return harness.errno_name(exc) if isinstance(exc, OSError) else str(exc)
    return {"creds": creds, "pid": peer_pid(sock)}


@observation("creds.peer.mechanism")
def peer_mechanism():
    """The peer-credential mechanism that works: SO_PEERCRED (Linux) or LOCAL_PEERCRED (BSDs)."""
    found = peer()
    detail = {"failed": found["tried"]} if found["tried"] else {}
    if found["mechanism"] == UNSUPPORTED and not found["tried"]:
        detail["why"] = (f"Python has no SO_PEERCRED here and LOCAL_PEERCRED (level 0) "
                         f"is not an option on {sys.platform}")
    return Measured(found["mechanism"], **detail)


@observation("creds.peer.uid_matches")
def peer_uid_matches():
    """The uid the mechanism reports is the connecting process's effective uid."""
    found = peer()
    if found["creds"] is None:
        return UNSUPPORTED
    detail = {"reported": found["creds"], "peer": found["peer"],
              "peer_dropped_root": found["peer_dropped_root"]}
    return Measured(found["creds"]["uid"] == found["peer"]["uid"], **detail)


def whose_pid(seen, peer_pid_value, own_pid):
    """"peer" when a side was given the other process's pid, "self" for its own, else why not."""
    if seen.get("pid") is None:
        return "none"
    return {peer_pid_value: "peer", own_pid: "self"}.get(seen["pid"], "other")


@observation("creds.peer.pid")
def peer_pid_each_side():
    """Each end of a connection is told the other's pid: [accepting side, connecting side]."""
    found = peer()
    child_pid, parent_pid = found["peer"]["pid"], os.getpid()
    accepting = whose_pid(found["saw_connector"], child_pid, parent_pid)
    connecting = whose_pid(found["peer"]["saw_listener"], parent_pid, child_pid)
    if accepting == connecting == "none":
        return Measured(UNSUPPORTED, accepting=found["saw_connector"],
                        connecting=found["peer"]["saw_listener"])
    return Measured([accepting, connecting], accepting=found["saw_connector"],
                    connecting=found["peer"]["saw_listener"], connector_pid=child_pid,
                    listener_pid=parent_pid)


@observation("creds.peer.after_peer_exit")
def peer_after_exit():
    """Once the peer has exited, the accepted socket still reports its credentials ("kept")."""
    found = peer()
    if found["creds"] is None:
        return UNSUPPORTED
    after = found["after_exit"]
    if not isinstance(after, dict):
        return Measured(after, before=found["creds"])
    kept = after["creds"] == found["creds"]
    detail = {"before": found["creds"], "after": after["creds"],
              "pid_after_exit": after["pid"].get("pid"), "exited_pid": found["peer"]["pid"]}
    if not kept:
        return Measured("changed", **detail)
    return Measured("kept", **detail)


# --- SCM_CREDS: the sender's credentials, filled in by the kernel (FreeBSD) -----------------------

def send_scm_creds(sock, scm_creds):
    """In the child: one datagram with an empty struct cmsgcred for the kernel to fill in."""
    try:
        sock.sendmsg([b"c"], [(socket.SOL_SOCKET, scm_creds, bytes(CMSGCRED.size))])
    except OSError as exc:
        return {"sent": harness.errno_name(exc), **_unprivileged.whoami()}
    return {"sent": OK, **_unprivileged.whoami()}


def parse_cmsgcred(raw):
    pid, uid, euid, gid, ngroups, *groups = CMSGCRED.unpack(raw[:CMSGCRED.size])
    return {"pid": pid, "uid": uid, "euid": euid, "gid": gid, "groups": groups[:max(0, ngroups)]}


@observation("creds.scm_creds")
def scm_creds():
    """A sender's SCM_CREDS message arrives with its pid and uids filled in by the kernel (FreeBSD)."""
    scm_creds_type = harness.constant("SCM_CREDS")
    if scm_creds_type is None:
        return Measured(UNSUPPORTED, missing=["SCM_CREDS"])
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        setup, _ = child_setup(os.getcwd())
        sender = harness.in_child(send_scm_creds, a, scm_creds_type, setup=setup,
                                  timeout=CHILD_TIMEOUT)
        if sender.error:
            raise harness.Unmeasurable(f"the sending child failed: {sender.error}")
        if sender.value["sent"] != OK:
            return Measured(sender.value["sent"], failed_at="sendmsg")
        received = harness.bounded_recv(
            b, lambda: b.recvmsg(1, socket.CMSG_SPACE(CMSGCRED.size)), CONNECT_WINDOW)
    if not isinstance(received, tuple):
        raise harness.Unmeasurable(f"the datagram did not arrive: {received}")
    _, ancillary, _, _ = received
    creds = [parse_cmsgcred(data) for level, kind, data in ancillary
             if level == socket.SOL_SOCKET and kind == scm_creds_type
             and len(data) >= CMSGCRED.size]
    if not creds:
        return Measured("absent", ancillary=len(ancillary))
    expected = {"pid": sender.value["pid"], "euid": sender.value["uid"]}
    got = {"pid": creds[0]["pid"], "euid": creds[0]["euid"]}
    return Measured(OK if got == expected else "mismatch", received=creds[0], sender=expected)


# --- SCM_CREDENTIALS -----------------------------------------------------------------------------

@observation("creds.scm_credentials")
def scm_credentials():
    """With SO_PASSCRED set, each message arrives with the sender's SCM_CREDENTIALS (Linux)."""
    passcred, credentials = harness.constant("SO_PASSCRED"), harness.constant("SCM_CREDENTIALS")
    if passcred is None or credentials is None:
        missing = [name for name, value in (("SO_PASSCRED", passcred),
                                            ("SCM_CREDENTIALS", credentials)) if value is None]
        return Measured(UNSUPPORTED, missing=missing)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.setsockopt(socket.SOL_SOCKET, passcred, 1)
        a.send(b"x")
        b.setblocking(False)
        _, ancillary, _, _ = b.recvmsg(1, socket.CMSG_SPACE(UCRED.size))
    received = [parse_ucred(data) for level, kind, data in ancillary
                if level == socket.SOL_SOCKET and kind == credentials]
    if not received:
        return Measured("absent", ancillary=len(ancillary))
    expected = {"pid": os.getpid(), "uid": os.geteuid(), "gid": os.getegid()}
    return Measured(OK if received[0] == expected else "mismatch",
                    received=received[0], expected=expected)


if __name__ == "__main__":
    harness.main()
