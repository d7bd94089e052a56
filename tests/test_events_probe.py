"""The events probe: its answers here, the shape it gives them, and the BSD paths.

Linux has epoll and POLLRDHUP; macOS has neither (kqueue instead), FreeBSD has kqueue and
POLLRDHUP.  Hiding the Linux names makes the probe take the BSD shape on this kernel; the
kqueue formatting is checked against a stand-in, since no kqueue exists here.
"""
import os
import select
import sys

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.probes import events
from probe_runs import values_of

FAMILY = "events"
DEADLINE = 20

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="asserts Linux's answers")


@pytest.fixture(scope="module")
def linux_run():
    return runner.run(FAMILY, DEADLINE)


@linux_only
def test_every_key_is_measured_quickly_and_nothing_is_left(linux_run):
    values = values_of(linux_run, every_key=True)
    assert values["stream.listener.shutdown"] == ["ok", "EINVAL"]
    assert values["fifo.events.last_writer_closed"] == [
        "epoll:EPOLLHUP", "poll:POLLHUP", "select:readable"]
    # Three blocked-waiter keys, each one block window plus a wake-up: no sleeps.
    assert linux_run.elapsed_s < 5


@linux_only
def test_without_epoll_and_pollrdhup_as_on_macos_every_key_still_answers(linux_run):
    hidden = runner.run(FAMILY, DEADLINE, env={
        **os.environ, "IPCMATRIX_HIDE": "select.epoll,select.POLLRDHUP,select.EPOLLRDHUP"})
    values = values_of(hidden, every_key=True)
    assert values["stream.events.peer_shutdown_wr"] == ["poll:POLLIN", "select:readable"]
    for key, answers in values.items():
        for answer in answers:
            assert "epoll" not in answer and "RDHUP" not in answer, (key, answer)


class FakeEvent:
    def __init__(self, filter, flags, data=0):
        self.filter, self.flags, self.data = filter, flags, data


class FakeKqueue:
    """Stands in for select.kqueue: answers every change with a canned event."""
    answers = []

    def control(self, changes, max_events, timeout):
        assert len(changes) <= max_events and timeout >= 0
        return self.answers

    def close(self):
        pass


@pytest.fixture
def fake_kqueue(monkeypatch):
    constants = {"KQ_FILTER_READ": -1, "KQ_FILTER_WRITE": -2, "KQ_EV_ADD": 1,
                 "KQ_EV_EOF": 0x8000, "KQ_EV_ERROR": 0x4000}
    for name, value in constants.items():
        monkeypatch.setattr(select, name, value, raising=False)
    monkeypatch.setattr(select, "kqueue", FakeKqueue, raising=False)
    monkeypatch.setattr(select, "kevent", lambda fd, kind, flags: (fd, kind, flags), raising=False)
    return FakeKqueue


def test_kqueue_events_are_named_by_filter_and_flags(fake_kqueue, monkeypatch):
    import errno
    fake_kqueue.answers = [FakeEvent(-1, 0x8000), FakeEvent(-2, 0x4000, errno.EINVAL)]
    assert events.kqueue_wait(0, True, 0) == ["EVFILT_READ+EV_EOF", "EVFILT_WRITE+EV_ERROR(EINVAL)"]
    fake_kqueue.answers = []
    assert events.report("kqueue", events.kqueue_wait(0, False, 0)) == "kqueue:none"
    monkeypatch.delattr(select, "epoll", raising=False)
    assert "kqueue" in events.mechanisms() and "epoll" not in events.mechanisms()


def test_a_waiter_nothing_wakes_says_blocks(monkeypatch):
    # The control for "woken": with no event at all, every waiter reports blocks.
    monkeypatch.setenv("IPCMATRIX_BLOCK_WINDOW", "0.05")
    r, w = os.pipe()
    try:
        with events.blocked_waiters(r, close_first=[]) as collect:
            answers = collect()
    finally:
        os.close(r)
        os.close(w)
    assert answers == sorted(f"{m}:blocks" for m in events.mechanisms())


def test_a_waiter_that_never_slept_is_not_counted_as_woken(monkeypatch):
    monkeypatch.setenv("IPCMATRIX_BLOCK_WINDOW", "0.02")
    r, w = os.pipe()
    try:
        os.write(w, b"already there")
        with events.blocked_waiters(r, close_first=[]) as collect:
            answers = collect()
    finally:
        os.close(r)
        os.close(w)
    assert all(":returned-before-the-event:" in a for a in answers), answers


def test_a_mechanism_that_refuses_the_fd_gives_its_errno():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert events.wait("select", r, False, 0) == ["EBADF"]


def test_every_key_has_a_claim():
    assert all(o.claim for o in catalogue.observations_of(FAMILY))
