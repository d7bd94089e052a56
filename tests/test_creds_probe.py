"""The creds probe on other platforms' paths: Linux constants hidden (run for real through
the runner), and LOCAL_PEERCRED with struct xucred as macOS and FreeBSD return it."""
import os
import socket
import struct
import sys

import pytest

from ipcmatrix import runner
from ipcmatrix.probes import _unprivileged, creds

DEADLINE = 20.0
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason=f"hides Linux constants; this is {sys.platform}")


def run_creds(hide="", keys=()):
    environment = dict(os.environ, IPCMATRIX_HIDE=hide, IPCMATRIX_ONLY=",".join(keys))
    result = runner.run("creds", DEADLINE, env=environment)
    assert result.status == "ok", result.message + result.stderr_tail
    assert not result.left_files and not result.left_processes
    return result.observations


@linux_only
def test_without_so_peercred_linux_reports_no_mechanism_rather_than_level_0():
    found = run_creds(hide="socket.SO_PEERCRED",
                      keys=["creds.peer.mechanism", "creds.peer.uid_matches"])
    assert found["creds.peer.mechanism"]["value"] == "unsupported"
    assert "LOCAL_PEERCRED (level 0) is not an option on linux" in \
        found["creds.peer.mechanism"]["detail"]["why"]
    assert found["creds.peer.uid_matches"]["value"] == "unsupported"


@linux_only
@pytest.mark.parametrize("hidden", ["SO_PASSCRED", "SCM_CREDENTIALS"])
def test_without_passcred_constants_scm_credentials_is_unsupported(hidden):
    record = run_creds(hide=f"socket.{hidden}", keys=["creds.scm_credentials"])
    assert record["creds.scm_credentials"] == {
        "value": "unsupported", "detail": {"missing": [hidden]},
        "ms": record["creds.scm_credentials"]["ms"]}


@pytest.mark.skipif(os.geteuid() != 0, reason=f"only root can give the peer another uid "
                    f"(running as uid {os.geteuid()})")
def test_the_uid_reported_is_the_peers_not_ours():
    record = run_creds(keys=["creds.peer.uid_matches"])["creds.peer.uid_matches"]
    uid, _ = _unprivileged.nobody()
    assert record["value"] is True
    assert record["detail"]["peer_dropped_root"] is True
    assert record["detail"]["reported"]["uid"] == record["detail"]["peer"]["uid"] == uid != 0


# --- LOCAL_PEERCRED: macOS and FreeBSD, with the kernel's answer supplied ---------------------

def xucred(uid, groups, pid=None):
    """struct xucred bytes: 76 as macOS returns them, 88 with FreeBSD's cr_pid."""
    raw = creds.XUCRED.pack(creds.XUCRED_VERSION, uid, len(groups),
                            *(groups + [0] * (creds.XU_NGROUPS - len(groups))))
    if pid is None:
        return raw
    raw += bytes(creds.XUCRED_PID_OFFSET - len(raw))
    return raw + struct.pack("@q", pid)


class FakeSocket:
    """Answers getsockopt with what a BSD kernel would, and remembers what it was asked."""

    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def getsockopt(self, level, option, size):
        self.asked.append((level, option, size))
        return self.answer[:size]


@pytest.fixture
def pretend(monkeypatch):
    """Become another platform: sys.platform and the socket constants its Python has."""
    def become(platform, local_peercred=None):
        monkeypatch.setattr(sys, "platform", platform)
        monkeypatch.delattr(socket, "SO_PEERCRED", raising=False)
        if local_peercred is None:
            monkeypatch.delattr(socket, "LOCAL_PEERCRED", raising=False)
        else:
            monkeypatch.setattr(socket, "LOCAL_PEERCRED", local_peercred, raising=False)
    return become


def test_macos_reads_local_peercred_at_level_0_and_parses_xucred(pretend):
    pretend("darwin", local_peercred=1)
    sock = FakeSocket(xucred(501, [20, 12, 61]))
    mechanism, found, tried = creds.peer_credentials(sock)
    assert mechanism == "LOCAL_PEERCRED"
    assert found == {"uid": 501, "groups": [20, 12, 61]}
    assert tried == {}
    assert sock.asked == [(0, 1, creds.XUCRED_ROOM)]  # SOL_LOCAL, not SOL_SOCKET (1 = SO_DEBUG)


def test_freebsd_without_the_python_constant_uses_the_header_value_and_reads_cr_pid(pretend):
    pretend("freebsd14")
    sock = FakeSocket(xucred(1001, [1001, 0], pid=4242))
    mechanism, found, _ = creds.peer_credentials(sock)
    assert mechanism == "LOCAL_PEERCRED"
    assert found == {"uid": 1001, "groups": [1001, 0], "pid": 4242}
    assert sock.asked == [(creds.SOL_LOCAL, creds.LOCAL_PEERCRED, creds.XUCRED_ROOM)]


def test_linux_never_asks_level_0_even_when_it_would_answer(pretend):
    pretend("linux")
    sock = FakeSocket(xucred(os.geteuid(), []))  # what a mistaken level-0 read could return
    assert creds.peer_credentials(sock) == ("unsupported", None, {})
    assert sock.asked == []


def test_a_reply_that_is_not_an_xucred_is_a_failure_not_a_mechanism(pretend):
    pretend("darwin", local_peercred=1)
    garbage = struct.pack("@I", 7) + bytes(creds.XUCRED.size)  # cr_version 7
    mechanism, found, tried = creds.peer_credentials(FakeSocket(garbage))
    assert (mechanism, found) == ("unsupported", None)
    assert "cr_version 7" in tried["LOCAL_PEERCRED"]


def test_a_failing_getsockopt_is_recorded_by_errno(pretend):
    pretend("darwin", local_peercred=1)

    class Refusing(FakeSocket):
        def getsockopt(self, *args):
            raise OSError(22, "Invalid argument")

    assert creds.peer_credentials(Refusing(b"")) == ("unsupported", None,
                                                     {"LOCAL_PEERCRED": "EINVAL"})


# --- the peer's pid, and SCM_CREDS --------------------------------------------------------------

class OptionSocket(FakeSocket):
    """Answers each (level, option) with its own reply, as a BSD kernel would."""

    def __init__(self, answers):
        super().__init__(b"")
        self.answers = answers

    def getsockopt(self, level, option, size):
        self.asked.append((level, option, size))
        return self.answers[(level, option)][:size]


def test_macos_takes_the_pid_from_local_peerpid_since_its_xucred_has_none(pretend):
    pretend("darwin", local_peercred=1)
    sock = OptionSocket({(0, 1): xucred(501, [20]), (0, creds.LOCAL_PEERPID): struct.pack("@i", 777)})
    assert creds.peer_pid(sock) == {"mechanism": "LOCAL_PEERPID", "pid": 777}
    assert sock.asked[-1] == (0, 2, 4)


def test_freebsd_takes_the_pid_from_xucred_and_never_asks_option_2(pretend):
    pretend("freebsd14")
    sock = OptionSocket({(0, 1): xucred(1001, [1001], pid=4242)})
    assert creds.peer_pid(sock) == {"mechanism": "LOCAL_PEERCRED", "pid": 4242}
    assert all(option != 2 for _, option, _ in sock.asked)  # option 2 is LOCAL_CREDS there


def test_no_pid_anywhere_says_what_each_mechanism_gave(pretend):
    pretend("freebsd12")
    sock = OptionSocket({(0, 1): xucred(1001, [])})  # FreeBSD before 13: no cr_pid
    assert creds.peer_pid(sock) == {"mechanism": None, "pid": None,
                                    "tried": {"LOCAL_PEERCRED": "no pid field"}}


def test_each_side_is_labelled_by_whose_pid_it_was_given():
    assert creds.whose_pid({"pid": 10}, 10, 20) == "peer"
    assert creds.whose_pid({"pid": 20}, 10, 20) == "self"
    assert creds.whose_pid({"pid": 30}, 10, 20) == "other"
    assert creds.whose_pid({"pid": None}, 10, 20) == "none"


def test_each_side_here_is_told_the_other_ones_pid():
    record = run_creds(keys=["creds.peer.pid"])["creds.peer.pid"]
    assert record["value"] == ["peer", "peer"]
    assert record["detail"]["accepting"]["pid"] == record["detail"]["connector_pid"]


def test_credentials_outlive_the_peer_that_exited():
    record = run_creds(keys=["creds.peer.after_peer_exit"])["creds.peer.after_peer_exit"]
    assert record["value"] == "kept"
    assert record["detail"]["pid_after_exit"] == record["detail"]["exited_pid"]


def test_a_cmsgcred_round_trips():
    raw = creds.CMSGCRED.pack(42, 1001, 1002, 20, 2, 20, 12, *([0] * 14))
    assert creds.CMSGCRED.size == 84  # sys/sys/socket.h struct cmsgcred on LP64
    assert creds.parse_cmsgcred(raw) == {"pid": 42, "uid": 1001, "euid": 1002, "gid": 20,
                                         "groups": [20, 12]}


@linux_only
def test_scm_creds_where_the_kernel_knows_no_such_message_is_its_errno(monkeypatch):
    # macOS exports SCM_CREDS (3) but its kernel accepts only SCM_RIGHTS; Linux's kernel
    # refuses type 3 (SCM_SECURITY, receive-only) the same way: the probe's macOS path.
    monkeypatch.setattr(socket, "SCM_CREDS", 3, raising=False)
    result = creds.scm_creds()
    assert (result.value, result.detail) == ("EINVAL", {"failed_at": "sendmsg"})
