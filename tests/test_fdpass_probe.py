"""The fdpass probe as the kit runs it: every key measured, nothing leaked, and the
macOS/FreeBSD code paths taken here by hiding Linux-only constants."""
import os
import select

import psutil
import pytest

from ipcmatrix import catalogue, expectations, runner
from ipcmatrix.probes import _fds, fdpass, harness

DEADLINE = 20.0

# The contract: the fdpass section of ../shared/spec/observations.md.
REQUIRED = [
    "fdpass.shared_offset", "fdpass.shared_status_flags", "fdpass.cloexec_shared",
    "fdpass.lowest_free_fd", "fdpass.max_fds_per_message", "fdpass.too_many_fds",
    "fdpass.ctrunc.flag", "fdpass.ctrunc.installed", "fdpass.ctrunc.leaked",
    "fdpass.no_control_buffer.leaked", "fdpass.sender_closed_before_recv",
    "fdpass.over_dgram", "fdpass.over_seqpacket", "fdpass.zero_data_stream",
    "fdpass.cmsg_cloexec", "fdpass.self_passing", "fdpass.receiver_at_fd_limit",
    "fdpass.kinds.pipe", "fdpass.kinds.directory", "fdpass.kinds.event_queue",
]
MACOS_LIKE = "socket.MSG_CMSG_CLOEXEC,select.epoll,socket.SOCK_SEQPACKET"


def run_probe(**env):
    return runner.run("fdpass", DEADLINE, env={**os.environ, **env})


def values(result):
    assert result.status == "ok", result.message + result.stderr_tail
    errors = {k: r["error"] for k, r in result.observations.items() if "error" in r}
    assert errors == {}
    return {key: record["value"] for key, record in result.observations.items()}


@pytest.fixture(scope="module")
def default_run():
    return run_probe()


def test_the_probe_declares_every_required_key_and_every_table_has_it():
    declared = [o.key for o in catalogue.observations_of("fdpass")]
    assert set(REQUIRED) <= set(declared)
    for table in expectations.load_all(known_keys=set(catalogue.catalogue())):
        missing = [key for key in declared if key not in table.entries]
        assert missing == [], f"{table.path} lacks {missing}"
        assert all(e["ref"].strip() for key in declared for e in table.entries[key])


def test_every_key_is_measured_and_the_probe_ends_with_the_fds_it_started_with(default_run):
    measured = values(default_run)
    assert set(REQUIRED) <= set(measured)
    own = default_run.observations["fdpass.probe_leaked_fds"]
    assert own["value"] == 0
    assert own["detail"]["started_with"] == own["detail"]["ended_with"]
    assert own["detail"]["swept"] == []          # no observation needed the safety net
    assert default_run.left_processes == [] and default_run.left_files == []


def test_the_kit_process_has_the_same_fds_before_and_after_running_the_probe():
    me = psutil.Process()
    before_count, before_set = me.num_fds(), _fds.open_fds()
    result = run_probe()
    assert result.status == "ok"
    assert me.num_fds() == before_count
    assert _fds.open_fds() == before_set


@pytest.mark.parametrize("source", ["/dev/fd", _fds.SCAN])
def test_the_macos_and_freebsd_ways_of_counting_fds_measure_the_same(source, default_run):
    """/dev/fd (macOS, FreeBSD with fdescfs) and fcntl scanning (FreeBSD without it)."""
    result = run_probe(**{_fds.ENV_FD_SOURCE: source})
    assert values(result) == values(default_run)
    assert result.observations["fdpass.probe_leaked_fds"]["detail"]["fd_source"] == source


def test_with_linux_only_constants_hidden_every_key_is_still_measured():
    """The path a Mac takes: no MSG_CMSG_CLOEXEC, no epoll, no seqpacket constant."""
    result = run_probe(**{harness.ENV_HIDE: MACOS_LIKE, _fds.ENV_FD_SOURCE: "/dev/fd"})
    measured = values(result)
    assert set(REQUIRED) <= set(measured)
    assert measured["fdpass.cmsg_cloexec"] == "unsupported"
    assert measured["fdpass.over_seqpacket"] == "unsupported"
    assert measured["fdpass.kinds.event_queue"] == "unsupported"
    assert result.observations["fdpass.kinds.event_queue"]["detail"] == {"mechanism": None}
    assert measured["fdpass.probe_leaked_fds"] == 0


class StandInKqueue:
    """Where select.kqueue would be: an object with fileno() and close() like the real one."""
    made = []

    def __init__(self):
        self.r, self.w = os.pipe()
        self.made.append(self)

    def fileno(self):
        return self.r

    def close(self):
        _fds.close_all([self.r, self.w])
        self.r = self.w = -1


def test_without_epoll_the_kqueue_branch_is_taken_and_its_queue_closed(monkeypatch):
    monkeypatch.delattr(select, "epoll", raising=False)
    monkeypatch.setattr(select, "kqueue", StandInKqueue, raising=False)
    before = _fds.open_fds()
    result = fdpass.kinds_event_queue()
    assert (result.value, result.detail) == ("ok", {"mechanism": "kqueue"})
    assert StandInKqueue.made[-1].r == -1
    assert _fds.open_fds() == before


def test_the_fd_limit_is_lowered_only_in_the_child_and_the_refused_fd_is_closed():
    limit = os.sysconf("SC_OPEN_MAX")
    result = fdpass.receiver_at_fd_limit()
    assert result.detail["writer_closed"] is True     # every platform closes it (B31)
    assert os.sysconf("SC_OPEN_MAX") == limit


# --- the fd-passing edges added with the second set of issues ----------------------------

def test_the_edges_answer_as_linux_does(default_run):
    if os.uname().sysname != "Linux":
        pytest.skip("asserts Linux's answers")
    values = {key: record.get("value") for key, record in default_run.observations.items()}
    assert values["fdpass.ctrunc.cmsg_len"] == socket_cmsg_len(1)
    assert values["fdpass.multiple_cmsgs"] == "ok"
    assert values["fdpass.stream.send_when_nearly_full"] == "EAGAIN"
    nearly_full = default_run.observations["fdpass.stream.send_when_nearly_full"]["detail"]
    assert nearly_full["plain_send_after"] == "EAGAIN"   # the control fails the same way


def socket_cmsg_len(fds):
    import socket
    return socket.CMSG_LEN(fds * _fds.INT)


@pytest.mark.parametrize("system, size", [("Linux", 56), ("Darwin", 48), ("FreeBSD", 48)])
def test_the_msghdr_layout_is_each_systems_lp64_abi(system, size):
    # sizeof(struct msghdr): glibc x86_64 56 (size_t iovlen/controllen); macOS and FreeBSD
    # <sys/socket.h> 48 (int msg_iovlen, socklen_t msg_controllen).
    msghdr, cmsg_len = _fds._msghdr_layout(system)
    import ctypes
    assert ctypes.sizeof(msghdr) == size
    assert ctypes.sizeof(cmsg_len) == (8 if system == "Linux" else 4)


def test_cmsg_len_is_read_in_the_systems_width_and_null_without_a_header():
    import ctypes
    header = (28).to_bytes(4, "little") + b"\0" * 12    # a BSD cmsghdr: socklen_t first
    assert _fds.RawReceived(1, 0, header, ctypes.c_uint32).first_cmsg_len == 28
    assert _fds.RawReceived(1, 0, b"", ctypes.c_size_t).first_cmsg_len is None


def test_libc_recvmsg_sees_what_cpython_would_and_installs_what_it_names():
    import socket
    a, b = socket.socketpair()
    r, w = os.pipe()
    with a, b:
        _fds.send_fds(a, [r, w])
        before = _fds.open_fds()
        got = _fds.c_recvmsg(b.fileno(), 16, _fds.space_for(2))
        gained = sorted(_fds.open_fds() - before)
        _fds.close_all(gained + [r, w])
    assert got.nbytes == 1 and not got.flags & socket.MSG_CTRUNC
    assert got.first_cmsg_len == socket.CMSG_LEN(2 * _fds.INT)
    assert len(gained) == 2


def test_a_platform_taking_one_cmsg_per_message_gives_the_errno(monkeypatch):
    # macOS: unp_internalize refuses a second cmsghdr with EINVAL.
    import errno
    import socket
    real = socket.socket.sendmsg

    def one_cmsg_only(self, buffers, ancdata=(), *args):
        if len(ancdata) > 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(self, buffers, ancdata, *args)

    monkeypatch.setattr(socket.socket, "sendmsg", one_cmsg_only)
    assert fdpass.multiple_cmsgs() == "EINVAL"


def test_a_receiver_at_its_limit_that_gets_neither_fd_nor_ctrunc_is_dropped(monkeypatch):
    # gVisor: rightsFDs stops at EMFILE and sets no MSG_CTRUNC.  Stand in for it by
    # receiving without a control buffer where the kernel sets no MSG_CTRUNC either.
    import socket
    real = socket.socket.recvmsg
    monkeypatch.setattr(socket.socket, "recvmsg",
                        lambda self, size, control=0, flags=0: real(self, size, 0, flags)[:1]
                        + ([], 0, None))
    child = harness.in_child(fdpass.receive_at_limit)   # it fills its own fd table
    assert child.error is None
    value, detail = child.value
    assert value == "dropped" and detail["data"] == "x"
