"""The stream probe's macOS and FreeBSD code paths, run here through the runner.

Linux has MSG_NOSIGNAL and no SO_NOSIGPIPE; macOS before 11 has no MSG_NOSIGNAL, and
macOS and FreeBSD have an SO_NOSIGPIPE that CPython does not export.  Hiding the Linux
constant, and handing the probe the BSD option numbers, makes it take those paths on
this kernel, whose answers we know.
"""
import os
import socket
import sys

import pytest

from ipcmatrix import catalogue, runner
from probe_runs import values_of

FAMILY = "stream"
DEADLINE = 20

# The other platforms' paths are exercised on a Linux kernel, whose answers are asserted.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="these tests fake other platforms on a Linux kernel")


def all_keys():
    return {observation.key for observation in catalogue.observations_of(FAMILY)}


def run_patched(patch, only=None):
    """Run the family in the runner after ``patch`` (Python source) ran in the probe process."""
    code = (f"import socket\nimport ipcmatrix.probes.{FAMILY} as family\nfrom ipcmatrix.probes import harness\n"
            f"{patch}\nharness.main(family)\n")
    env = {**os.environ, "IPCMATRIX_ONLY": only} if only else None
    return runner.run(FAMILY, DEADLINE, command=[sys.executable, "-I", "-c", code], env=env)


@pytest.fixture(scope="module")
def linux_run():
    return runner.run(FAMILY, DEADLINE)


def test_the_linux_path_measures_every_key_quickly_and_leaves_nothing(linux_run):
    values = values_of(linux_run)
    assert set(values) == all_keys()
    assert values["stream.msg_nosignal"] == "ok"
    assert linux_run.observations["stream.msg_nosignal"]["detail"] == {"send": "EPIPE"}
    assert values["stream.peer_closed.sigpipe_kills"] is True
    assert linux_run.elapsed_s < 5, "a family should take well under a second or two"


def test_without_msg_nosignal_the_flag_is_unsupported_and_nothing_else_changes(linux_run):
    hidden = runner.run(FAMILY, DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": "socket.MSG_NOSIGNAL"})
    values = values_of(hidden)
    assert set(values) == all_keys()
    assert values["stream.msg_nosignal"] == "unsupported"
    assert values["stream.peer_closed.sigpipe_kills"] is True  # the signal itself still kills
    unchanged = {key: value for key, value in values_of(linux_run).items()
                 if key != "stream.msg_nosignal"}
    assert {key: values[key] for key in unchanged} == unchanged


@pytest.mark.parametrize("system, number", [("Darwin", 0x1022), ("FreeBSD", 0x0800)])
def test_a_bsd_so_nosigpipe_number_refused_by_this_kernel_is_unsupported(system, number):
    run = run_patched(f"family.SO_NOSIGPIPE_BY_SYSTEM['Linux'] = "
                      f"family.SO_NOSIGPIPE_BY_SYSTEM[{system!r}]", only="stream.so_nosigpipe")
    assert values_of(run) == {"stream.so_nosigpipe": "unsupported"}
    assert run.observations["stream.so_nosigpipe"]["detail"] == {
        "setsockopt": "ENOPROTOOPT", "option": hex(number)}


@pytest.mark.parametrize("patch", [
    "family.SO_NOSIGPIPE_BY_SYSTEM['Linux'] = socket.SO_KEEPALIVE",   # the numeric path
    "socket.SO_NOSIGPIPE = socket.SO_KEEPALIVE",                      # a Python exporting it
], ids=["number-from-the-table", "constant-from-python"])
def test_an_option_the_kernel_accepts_but_that_lets_sigpipe_kill_is_not_support(patch):
    # setsockopt succeeds, so only the child's death tells that nothing was suppressed.
    run = run_patched(patch, only="stream.so_nosigpipe")
    assert values_of(run) == {"stream.so_nosigpipe": "no-effect"}
    assert run.observations["stream.so_nosigpipe"]["detail"] == {
        "signal": "SIGPIPE", "option": hex(socket.SO_KEEPALIVE)}


def test_a_send_flag_the_kernel_ignores_is_not_taken_for_msg_nosignal():
    # MSG_DONTWAIT is accepted by send but does nothing about SIGPIPE.
    run = run_patched("socket.MSG_NOSIGNAL = socket.MSG_DONTWAIT", only="stream.msg_nosignal")
    assert values_of(run) == {"stream.msg_nosignal": "no-effect"}
