"""probes/_fds.py: counting open fds every platform's way, and the SCM_RIGHTS plumbing.

Linux has /proc/self/fd and /dev/fd, so the macOS way (/dev/fd) and the FreeBSD way
without fdescfs (asking fcntl about each number) are both exercised here.
"""
import os
import resource
import socket
import struct
import sys

import pytest

from ipcmatrix.probes import _fds, harness

SOURCES = ["/proc/self/fd", "/dev/fd", _fds.SCAN]


@pytest.fixture
def fd():
    """A fresh open fd, closed afterwards."""
    r, w = os.pipe()
    os.close(w)
    yield r
    os.close(r)


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_lists_an_fd_just_opened_and_not_one_just_closed(source, fd):
    closed = os.dup(fd)
    os.close(closed)
    found = _fds.open_fds(source)
    assert fd in found
    assert closed not in found


def test_all_sources_agree(fd):
    answers = [_fds.open_fds(source) for source in SOURCES]
    assert answers[0] == answers[1] == answers[2]


def test_the_fd_used_to_read_the_directory_is_not_counted():
    before = _fds.listed_fds("/proc/self/fd")
    assert _fds.listed_fds("/proc/self/fd") == before
    assert _fds.lowest_free() not in before


def test_a_directory_that_does_not_list_its_reader_is_not_trusted(tmp_path, fd):
    """Like FreeBSD's devfs /dev/fd without fdescfs: only 0, 1 and 2 are listed."""
    for name in ("0", "1", "2"):
        (tmp_path / name).touch()
    with pytest.raises(_fds.IncompleteListing):
        _fds.listed_fds(str(tmp_path))
    found = _fds.open_fds(str(tmp_path))   # falls back to asking fcntl
    assert fd in found and found == _fds.open_fds("/proc/self/fd")


def test_the_source_is_chosen_at_call_time(monkeypatch):
    monkeypatch.delenv(_fds.ENV_FD_SOURCE, raising=False)
    assert _fds.fd_source() == ("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    monkeypatch.setenv(_fds.ENV_FD_SOURCE, "/dev/fd")
    assert _fds.fd_source() == "/dev/fd"
    monkeypatch.setenv(_fds.ENV_FD_SOURCE, _fds.SCAN)
    assert _fds.fd_source() == _fds.SCAN


def test_the_scan_finds_an_fd_far_above_the_others_but_within_its_gap(fd):
    high = max(_fds.open_fds()) + _fds.SCAN_GAP // 2
    os.dup2(fd, high)
    try:
        assert high in _fds.scanned_fds()
    finally:
        os.close(high)
    assert high not in _fds.scanned_fds()


def test_the_scan_stops_at_the_limit_it_is_given(fd):
    assert _fds.scanned_fds(limit=fd) == {n for n in _fds.open_fds() if n < fd}


# --- control buffers ---------------------------------------------------------------------

def sent_four(control):
    """Send 4 pipe read ends and receive them into ``control`` bytes; (named, gained)."""
    pipes = [os.pipe() for _ in range(4)]
    a, b = socket.socketpair()
    try:
        _fds.send_fds(a, [r for r, _ in pipes])
        with _fds.received(b, control) as got:
            return len(got.named), len(got.gained), got.ctrunc
    finally:
        a.close()
        b.close()
        _fds.close_all([fd for pair in pipes for fd in pair])


def test_room_for_one_is_cmsg_len_of_one_int_and_holds_exactly_one_fd():
    assert _fds.room_for(1) == socket.CMSG_LEN(struct.calcsize("i"))
    if sys.platform.startswith("linux"):
        assert sent_four(_fds.room_for(1)) == (1, 1, True)


@pytest.mark.skipif(not sys.platform.startswith("linux") or struct.calcsize("l") != 8,
                    reason="the CMSG_SPACE padding trap is an LP64 Linux fact (8-byte alignment)")
def test_cmsg_space_of_one_int_holds_two_fds_on_lp64_linux():
    """Why the probe uses CMSG_LEN: CMSG_SPACE(sizeof(int)) is 24 bytes here, room for 2."""
    assert sent_four(_fds.space_for(1)) == (2, 2, True)


def test_all_fds_fit_in_space_for_all():
    assert sent_four(_fds.space_for(4)) == (4, 4, False)


def test_fds_named_reads_only_whole_ints_of_what_was_copied_out():
    data = struct.pack("ii", 7, 9)
    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, data[:6]),     # cut mid-int
               (socket.SOL_SOCKET, socket.SCM_RIGHTS + 1, data),      # not SCM_RIGHTS
               (socket.SOL_SOCKET, socket.SCM_RIGHTS, data)]
    assert _fds.fds_named(ancdata) == [7, 7, 9]


class InstallsButDoesNotName:
    """A socket stand-in that behaves like macOS on a short control buffer: the kernel
    installs an fd in the receiver but the control data copied out names none."""

    def __init__(self):
        self.installed = None

    def recvmsg(self, bufsize, control, flags=0):
        self.installed = os.open(os.devnull, os.O_RDONLY)
        return b"x", [], socket.MSG_CTRUNC, None


def test_an_fd_installed_but_not_named_is_counted_as_leaked_and_closed():
    sock = InstallsButDoesNotName()
    with _fds.received(sock, _fds.room_for(1)) as got:
        assert got.named == []
        assert got.gained == [sock.installed]
        assert got.unnamed == [sock.installed]
        assert got.ctrunc
        assert _fds.is_open(sock.installed)
    assert not _fds.is_open(sock.installed)


def test_a_sweep_closes_what_was_left_open_inside_and_nothing_from_before(fd):
    with _fds.sweep() as swept:
        stray = os.dup(fd)
    assert swept.closed == [stray]
    assert not _fds.is_open(stray)
    assert _fds.is_open(fd)


def test_writer_alive_tells_an_open_write_end_from_a_closed_one():
    r, w = os.pipe()
    try:
        assert _fds.writer_alive(r)
        os.close(w)
        assert not _fds.writer_alive(r)
    finally:
        os.close(r)


def lowered_then_room(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(_fds.open_fds()) + 8
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    with _fds.nofile_room(needed):
        inside = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return low, inside, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_nofile_room_raises_a_low_soft_limit_and_restores_it():
    """Run in a child: the test process's own limit is never touched."""
    result = harness.in_child(lowered_then_room, 300)
    assert result.error is None
    low, inside, after = result.value
    assert inside >= low + 300 - 8 and after == low
