"""The launcher: a probe it forks starts as the same process an exec'd interpreter would
be, and no probe outlives the launcher, or the runner, or is lost when the launcher dies."""
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from ipcmatrix import launcher, runner

LAUNCHED = Path(__file__).parent / "launched"
BROKEN = Path(__file__).parent / "broken_probes"
DEADLINE = 10.0


@pytest.fixture
def own_launcher(monkeypatch):
    """A launcher of this test's own, so that killing it breaks nothing else."""
    mine = launcher.Launcher()
    monkeypatch.setattr(launcher, "LAUNCHER", mine)
    assert mine.start()
    yield mine
    mine.close()


def facts(run):
    assert run.status == "ok", (run.message, run.stderr_tail)
    return {key.partition(".")[2]: record["value"] for key, record in run.observations.items()}


def introspect(env=None):
    return runner.run("launched", DEADLINE, module=(str(LAUNCHED), "introspect"), env=env)


def test_a_forked_probe_starts_as_an_exec_started_one_would(own_launcher, monkeypatch):
    forked = facts(introspect())
    monkeypatch.setenv(launcher.LAUNCH_VARIABLE, "exec")
    started = facts(introspect(env={**os.environ}))
    assert forked["parent"] == own_launcher.pid and started["parent"] == os.getpid()
    for fact in ("parent", "cwd", "environment"):
        forked.pop(fact), started.pop(fact)
    assert forked == started
    assert forked["descriptors"] == [0, 1, 2] and forked["group_leader"] and forked["main"] == "__main__"
    assert forked["isolated"] and forked["no_site"] and forked["threads"] == 1


def test_a_forked_probe_has_the_runs_directory_and_environment(own_launcher):
    seen = facts(introspect(env={**os.environ, "IPCMATRIX_TEST_ONLY": "yes"}))
    environment = seen["environment"]
    assert environment["IPCMATRIX_TEST_ONLY"] == "yes"
    assert environment[runner.TOKEN_VARIABLE] != "0" * 32
    assert seen["cwd"] == environment["IPCMATRIX_WORKDIR"]   # the run's private directory
    assert os.path.basename(seen["cwd"]).startswith("ipcm-")


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="no /proc to read")
def test_the_kernel_shows_each_forked_probe_its_own_runs_token(own_launcher, tmp_path):
    """The sweep's mark: what /proc shows of a forked probe's environment is its token."""
    code = ("import os,sys; t=[e for e in open('/proc/self/environ','rb').read().split(b'\\0') "
            "if e.startswith(b'IPCMATRIX_RUN_TOKEN=')]; "
            "print('{\"observations\": {\"t.k\": {\"value\": \"%s\"}}}' % t[0].decode().split('=')[1])")
    (tmp_path / "show_token.py").write_text(code)
    first = runner.run("t", DEADLINE, module=(str(tmp_path), "show_token"))
    second = runner.run("t", DEADLINE, module=(str(tmp_path), "show_token"))
    tokens = {first.observations["t.k"]["value"], second.observations["t.k"]["value"]}
    assert len(tokens) == 2 and "0" * 32 not in tokens


def test_a_probe_whose_launcher_dies_is_reported_and_killed(own_launcher):
    result, thread, probe = hanging_probe(own_launcher)
    wait_for(lambda: os.path.getsize(Path(psutil.Process(probe).cwd(), runner.PROGRESS_FILE)))
    os.kill(own_launcher.pid, signal.SIGKILL)
    thread.join(DEADLINE)
    run = result["run"]
    assert run.status == "failed" and "launcher" in run.message
    assert run.observations == {"broken.before_hang": {"value": "ok"}}   # what it measured
    assert not alive(probe)


def test_once_the_launcher_is_gone_probes_start_in_their_own_interpreter(own_launcher):
    os.kill(own_launcher.pid, signal.SIGKILL)
    run = runner.run("pipe", DEADLINE)
    assert run.status == "ok", run.message
    assert "the probe launcher" in own_launcher.broken


def test_closing_the_launcher_kills_the_probes_it_still_has(own_launcher):
    result, thread, probe = hanging_probe(own_launcher)
    own_launcher.close()   # what happens when the runner's process ends, however it ends
    thread.join(DEADLINE)
    assert not alive(probe)
    assert result["run"].status == "failed"


def test_a_launcher_that_cannot_start_leaves_probes_to_their_own_interpreters(monkeypatch):
    broken = launcher.Launcher(python="/nonexistent/python")
    monkeypatch.setattr(launcher, "LAUNCHER", broken)
    run = runner.run("pipe", DEADLINE)
    assert run.status == "ok", run.message
    assert "could not start" in broken.broken


def hanging_probe(own_launcher):
    """A probe that records a key and hangs, run in a thread: (its result, once the run
    ends; the thread; the probe's pid, once the launcher has forked it)."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        run=runner.run("broken", DEADLINE, module=(str(BROKEN), "hang"))))
    thread.start()
    return result, thread, wait_for_child_of(own_launcher.pid)


def wait_for(condition, limit=DEADLINE):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            found = condition()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"still waiting after {limit} s")


def wait_for_child_of(pid):
    return wait_for(lambda: [child.pid for child in psutil.Process(pid).children()])[0]


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("how", ["thread", "status", "message", "raises"])
def test_a_forked_probe_ends_with_the_status_and_output_an_exec_started_one_would(
        own_launcher, monkeypatch, how):
    def ends(start):
        monkeypatch.setenv(launcher.LAUNCH_VARIABLE, start)
        run = runner.run("launched", DEADLINE, module=(str(LAUNCHED), "ends"),
                         env={**os.environ, "ENDS_HOW": how})
        stdout = "thread finished" if "thread finished" in run.message + run.stderr_tail else ""
        return run.returncode, run.status, run.stderr_tail.splitlines()[-2:], stdout

    forked, started = ends("fork"), ends("exec")
    assert forked == started
    assert "atexit ran" in forked[2][-1]
    if how == "status":
        assert forked[0] == 3
