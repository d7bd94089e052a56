"""Least privilege: what a probe makes is reachable by nobody else, and its names of
shared objects cannot collide with another run's."""
import os
import socket
import subprocess
import sys

import pytest

from ipcmatrix import runner
from ipcmatrix.probes import harness

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can become another user to try")
def test_another_user_cannot_reach_a_socket_in_a_probe_directory():
    workdir = runner.private_workdir()
    path = os.path.join(workdir, "s")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen(1)
            os.chmod(path, 0o777)  # even a socket file open to all is out of reach

            def connect_as_nobody():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                return harness.outcome(socket.socket(socket.AF_UNIX).connect, path)

            assert harness.in_child(connect_as_nobody).value == "EACCES"
    finally:
        os.unlink(path)
        os.rmdir(workdir)


def test_names_for_shared_objects_differ_between_runs_and_fit_macos():
    code = "from ipcmatrix.probes import harness; print(harness.unique_name('s'))"
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip() for _ in range(4)}
    names |= {harness.unique_name("s") for _ in range(4)}
    assert len(names) == 8
    assert all(n.startswith("/s") and len(n) <= 20 for n in names)  # macOS allows 30 for sem_open
