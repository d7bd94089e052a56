"""The netns probe: a fresh namespace's defaults, not the host's, and a clear "unsupported"
where no namespace can be made (off Linux, unshare refused, no unshare in the C library)."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from ipcmatrix import runner
from ipcmatrix.probes import _libc, harness, netns
from probe_runs import values_of

DEADLINE = 20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@linux_only
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to give a netns a max_dgram_qlen of its own")
def test_the_capacity_follows_the_fresh_netns_not_the_one_it_was_made_from():
    # The probe runs in a netns whose qlen is 512; the one it makes must start at 10 again.
    script = ("echo 512 > /proc/sys/net/unix/max_dgram_qlen && "
              f"exec {sys.executable} -I -m ipcmatrix.probes.netns")
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True,
                          timeout=DEADLINE, cwd=os.path.dirname(os.path.dirname(netns.__file__)))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["observations"]["dgram.queue.capacity_new_netns"]
    assert record["detail"]["host_max_dgram_qlen"] == 512
    assert record["detail"]["max_dgram_qlen_in_netns"] == 10
    assert record["value"] == 11


def test_without_unshare_in_the_c_library_both_keys_are_unsupported_with_the_reason():
    found = runner.run("netns", DEADLINE, env={**os.environ, _libc.ENV_MISSING: "unshare"})
    values = values_of(found, every_key=True)
    if sys.platform.startswith("linux") and hasattr(os, "unshare"):
        pytest.skip("this Python has os.unshare, which the missing-symbol list does not hide")
    assert values == {"names.abstract.netns_scoped": "unsupported",
                      "dgram.queue.capacity_new_netns": "unsupported"}
    assert "no unshare()" in found.observations["dgram.queue.capacity_new_netns"]["detail"]["reason"]


def test_off_linux_the_answer_is_unsupported_and_says_why(scratch, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    result = netns.capacity_new_netns()
    assert result.value == "unsupported"
    assert "darwin has no network namespaces" in result.detail["reason"]
    assert os.listdir(scratch) == []


@linux_only
def test_a_refused_unshare_is_unsupported_naming_each_attempt(scratch, monkeypatch):
    def refuse(flags):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(_libc, "unshare", refuse)
    result = netns.capacity_new_netns()
    assert result.value == "unsupported"
    assert "unshare(CLONE_NEWUSER|CLONE_NEWNET): EPERM" in result.detail["reason"]
    assert "user namespaces may be turned off" in result.detail["reason"]


@linux_only
def test_a_child_killed_in_the_namespace_leaves_nothing_behind(scratch, monkeypatch):
    def bind_and_hang():
        import socket
        import time
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind("r")
        time.sleep(30)

    monkeypatch.setattr(netns, "CHILD_TIMEOUT", 0.5)
    with pytest.raises(harness.Overrun):
        netns.in_new_netns(bind_and_hang)
    assert os.listdir(scratch) == []


@linux_only
def test_the_abstract_check_has_a_control_that_reaches_the_name(scratch):
    result = netns.abstract_netns_scoped()
    if result.value == "unsupported":
        pytest.skip(result.detail["reason"])
    assert result.detail["from_same_netns"] == "ok"
    assert result.value is True and result.detail["from_new_netns"] != "ok"
