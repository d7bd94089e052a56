"""The socketpair probe where SOCK_SEQPACKET is missing or refused, run here through the runner."""
import os
import sys

import pytest

from ipcmatrix import runner
from probe_runs import REFUSE_SEQPACKET_AS_MACOS, values_of

FAMILY = "socketpair"
DEADLINE = 20

# The other platforms' paths are exercised on a Linux kernel, whose answers are asserted.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="these tests fake other platforms on a Linux kernel")

LINUX = {"socketpair.stream": "ok", "socketpair.dgram": "ok", "socketpair.seqpacket": "ok",
         "socketpair.inet": "EOPNOTSUPP", "socketpair.full_duplex": True,
         "socketpair.flags.cloexec_nonblock": "ok"}


def test_here_every_type_pairs_and_inet_is_refused():
    run = runner.run(FAMILY, DEADLINE)
    assert values_of(run, every_key=True) == LINUX
    assert run.elapsed_s < 5


def test_without_the_constant_seqpacket_is_unsupported_and_nothing_else_changes():
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": "socket.SOCK_SEQPACKET"})
    assert values_of(run, every_key=True) == {**LINUX, "socketpair.seqpacket": "unsupported"}


def test_a_kernel_that_refuses_seqpacket_gives_its_errno():
    code = f"import socket\n{REFUSE_SEQPACKET_AS_MACOS}\nimport ipcmatrix.probes.{FAMILY} as family\n" \
           f"from ipcmatrix.probes import harness\nharness.main(family)\n"
    run = runner.run(FAMILY, DEADLINE, command=[sys.executable, "-I", "-c", code])
    assert values_of(run, every_key=True) == {**LINUX, "socketpair.seqpacket": "EPROTONOSUPPORT"}


@pytest.mark.parametrize("hidden", ["socket.SOCK_CLOEXEC", "socket.SOCK_NONBLOCK"])
def test_without_the_type_flags_as_on_macos_the_atomic_flags_are_unsupported(hidden):
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": hidden,
                                            "IPCMATRIX_ONLY": "socketpair.flags.cloexec_nonblock"})
    assert values_of(run) == {"socketpair.flags.cloexec_nonblock": "unsupported"}


def test_the_flags_are_read_from_the_kernel_not_from_python():
    # CPython's socketpair marks every socket FD_CLOEXEC itself; libc's does not, which the
    # control (a plain socketpair) shows, so a kernel ignoring SOCK_CLOEXEC would be caught.
    run = runner.run(FAMILY, DEADLINE, env={**os.environ,
                                            "IPCMATRIX_ONLY": "socketpair.flags.cloexec_nonblock"})
    detail = run.observations["socketpair.flags.cloexec_nonblock"]["detail"]
    assert detail["ends"] == [{"cloexec": True, "nonblock": True}] * 2
    assert detail["control_plain"] == [{"cloexec": False, "nonblock": False}] * 2


def test_a_kernel_that_ignores_the_flags_is_not_taken_for_support():
    patch = ("import ipcmatrix.probes._fds as fds\n_real = fds.c_socketpair\n"
             "fds.c_socketpair = lambda family, kind: _real(family, socket.SOCK_STREAM)\n")
    code = (f"import socket\n{patch}import ipcmatrix.probes.{FAMILY} as family\n"
            f"from ipcmatrix.probes import harness\nharness.main(family)\n")
    run = runner.run(FAMILY, DEADLINE, command=[sys.executable, "-I", "-c", code],
                     env={**os.environ, "IPCMATRIX_ONLY": "socketpair.flags.cloexec_nonblock"})
    assert values_of(run) == {"socketpair.flags.cloexec_nonblock": "ignored:cloexec+nonblock"}
