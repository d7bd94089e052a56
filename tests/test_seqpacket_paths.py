"""The seqpacket probe where SOCK_SEQPACKET is missing or refused, run here through the runner.

macOS's Python exports SOCK_SEQPACKET but its kernel refuses it (EPROTONOSUPPORT); a
Python without the constant at all is the other way to lack it.  Both must leave every
key present: ``seqpacket.supported`` says why, the others say ``"unsupported"``.
"""
import os
import sys

import pytest

from ipcmatrix import runner
from probe_runs import REFUSE_SEQPACKET_AS_MACOS, values_of

FAMILY = "seqpacket"
DEADLINE = 20

# The other platforms' paths are exercised on a Linux kernel, whose answers are asserted.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="these tests fake other platforms on a Linux kernel")


def run_patched(patch):
    code = f"import socket\nimport ipcmatrix.probes.{FAMILY} as family\nfrom ipcmatrix.probes import harness\n" \
           f"{patch}\nharness.main(family)\n"
    return runner.run(FAMILY, DEADLINE, command=[sys.executable, "-I", "-c", code])


@pytest.fixture(scope="module")
def linux_run():
    return runner.run(FAMILY, DEADLINE)


def test_here_seqpacket_is_measured(linux_run):
    values = values_of(linux_run)
    assert values["seqpacket.supported"] == "ok"
    assert values["seqpacket.truncation.received"] == "ABC"
    assert linux_run.elapsed_s < 5


def test_without_the_constant_every_key_is_unsupported():
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": "socket.SOCK_SEQPACKET"})
    assert set(values_of(run, every_key=True).values()) == {"unsupported"}


def test_a_kernel_that_refuses_seqpacket_names_the_errno_and_the_rest_are_unsupported():
    run = run_patched(REFUSE_SEQPACKET_AS_MACOS)
    values = values_of(run, every_key=True)
    assert values.pop("seqpacket.supported") == "EPROTONOSUPPORT"
    assert set(values.values()) == {"unsupported"}
    assert run.observations["seqpacket.peer_closed.read"]["detail"] == {
        "socketpair": "EPROTONOSUPPORT"}


def test_without_msg_trunc_only_the_flag_is_unsupported(linux_run):
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": "socket.MSG_TRUNC"})
    values = values_of(run, every_key=True)
    assert values["seqpacket.truncation.msg_trunc_flag"] == "unsupported"
    expected = {**values_of(linux_run), "seqpacket.truncation.msg_trunc_flag": "unsupported"}
    assert values == expected
