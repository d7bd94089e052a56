"""The leftover sweep: it finds a probe's escaped processes, and passes over older ones on
their start time alone, so its cost does not grow with every idle process on the machine."""
import os
import subprocess
import time

import psutil

from ipcmatrix import runner


def started_with_token(token):
    env = {**os.environ, runner.TOKEN_VARIABLE: token}
    # start_new_session: escaped from the probe's process group, as a daemon would be
    return subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)


def test_a_process_carrying_the_token_is_found_and_killed():
    token = runner.new_token()
    since = time.time()
    process = started_with_token(token)
    try:
        found = runner.sweep_processes(token, since=since)
        assert [entry["pid"] for entry in found] == [process.pid]
        process.wait(timeout=5)  # killed (the sweep may have reaped it already)
    finally:
        process.kill()
        process.wait()


def test_processes_older_than_the_probe_are_not_read(monkeypatch):
    token = runner.new_token()
    older = started_with_token(token)  # carries the token, yet predates the "probe"
    try:
        since = psutil.Process(older.pid).create_time() + 3 * runner.CREATE_TIME_SLACK_S
        read = []
        environ = psutil.Process.environ
        monkeypatch.setattr(psutil.Process, "environ",
                            lambda self: read.append(self.pid) or environ(self))
        assert runner.sweep_processes(token, since=since) == []
        assert older.pid not in read and older.poll() is None
        # Without a start time to go by, every process is read, and this one is found.
        assert [entry["pid"] for entry in runner.sweep_processes(token)] == [older.pid]
    finally:
        older.kill()
        older.wait()


def test_a_killed_process_whose_parent_has_not_reaped_it_is_not_waited_for():
    """The sweep waits for what it kills to die, not to be reaped: here init reaps an
    orphan about a second after it dies, and a sweep must not wait that out each time."""
    token = runner.new_token()
    since = time.time()
    env = {**os.environ, runner.TOKEN_VARIABLE: token}
    # An orphan: its parent (the shell) exits at once, so init is the one to reap it.
    shell = subprocess.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], env=env,
                           capture_output=True, text=True, start_new_session=True)
    orphan = int(shell.stdout)
    started = time.monotonic()
    found = runner.sweep_processes(token, since=since)
    assert [entry["pid"] for entry in found] == [orphan]
    assert time.monotonic() - started < 0.5
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
