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


NEW_KEYS_ON_LINUX = {"stream.accept.inherits_nonblock": False, "stream.accept4": "ok",
                     "stream.msg_oob": "ok", "stream.so_peek_off": "ok"}


def test_the_new_keys_answer_as_linux_does(linux_run):
    values = values_of(linux_run)
    assert {key: values[key] for key in NEW_KEYS_ON_LINUX} == NEW_KEYS_ON_LINUX
    capacity = linux_run.observations["stream.capacity"]
    assert capacity["detail"]["bounded_by"] == ["sender_sndbuf"]
    assert capacity["value"] > capacity["detail"]["with_small_sndbuf"]["bytes"]


@pytest.mark.parametrize("env", [{"IPCMATRIX_HIDE": "socket.SOCK_NONBLOCK"},
                                 {"IPCMATRIX_MISSING_SYMBOLS": "accept4"}],
                         ids=["no-type-flags-as-on-macos", "no-accept4-in-libc"])
def test_without_accept4_or_its_flags_it_is_unsupported(env):
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, **env,
                                            "IPCMATRIX_ONLY": "stream.accept4"})
    assert values_of(run) == {"stream.accept4": "unsupported"}


def test_inheritance_is_measured_with_accept_itself_and_a_bsd_answer_would_show():
    # Make libc's accept behave as BSD's: set O_NONBLOCK on the new fd when the listener
    # has it.  The probe must then say True, and the blocking control must stay False.
    patch = ("import fcntl, os\nimport ipcmatrix.probes._fds as fds\n_real = fds.c_accept\n"
             "def bsd_accept(fd):\n"
             "    new = _real(fd)\n"
             "    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:\n"
             "        os.set_blocking(new, False)\n"
             "    return new\n"
             "fds.c_accept = bsd_accept\n")
    run = run_patched(patch, only="stream.accept.inherits_nonblock")
    assert values_of(run) == {"stream.accept.inherits_nonblock": True}
    assert run.observations["stream.accept.inherits_nonblock"]["detail"] == {
        "control_blocking_listener": False}


def test_so_peek_off_is_unsupported_where_the_platform_has_no_such_option():
    run = run_patched("family.SO_PEEK_OFF_BY_SYSTEM.clear()\n"
                      "if hasattr(socket, 'SO_PEEK_OFF'): del socket.SO_PEEK_OFF",
                      only="stream.so_peek_off")
    assert values_of(run) == {"stream.so_peek_off": "unsupported"}


def test_an_option_the_kernel_accepts_but_ignores_is_not_taken_for_so_peek_off():
    # SO_KEEPALIVE is accepted on a unix socket and does nothing to MSG_PEEK.
    run = run_patched("family.SO_PEEK_OFF_BY_SYSTEM['Linux'] = socket.SO_KEEPALIVE",
                      only="stream.so_peek_off")
    assert values_of(run) == {"stream.so_peek_off": "ignored"}


def test_msg_oob_refused_at_the_send_as_on_the_bsds_gives_the_errno():
    patch = ("import errno\n_real_send = socket.socket.send\n"
             "def send(self, data, flags=0):\n"
             "    if flags & socket.MSG_OOB:\n"
             "        raise OSError(errno.EOPNOTSUPP, 'Operation not supported')\n"
             "    return _real_send(self, data, flags)\n"
             "socket.socket.send = send\n")
    run = run_patched(patch, only="stream.msg_oob")
    assert values_of(run) == {"stream.msg_oob": "EOPNOTSUPP"}
