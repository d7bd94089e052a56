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
         "socketpair.inet": "EOPNOTSUPP", "socketpair.full_duplex": True}


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
