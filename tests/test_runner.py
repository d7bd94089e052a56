"""The runner against deliberately broken probes: each one reported for what it did,
within its deadline, with nothing left running and nothing left on disk, whether the
probe was forked by the launcher or started in an interpreter of its own."""
import os
import re
import sys
import time
from pathlib import Path

import psutil
import pytest

from ipcmatrix import runner

BROKEN = Path(__file__).parent / "broken_probes"
DEADLINE = 2.0


@pytest.fixture(params=["forked", "exec"])
def run_broken(request):
    """Run a broken probe the way a family runs (forked by the launcher), or as a command."""
    def run(name, deadline=DEADLINE):
        if request.param == "forked":
            return runner.run("broken", deadline, module=(str(BROKEN), name))
        return runner.run("broken", deadline, command=[sys.executable, "-I", str(BROKEN / f"{name}.py")])
    return run


@pytest.fixture(autouse=True)
def nothing_left_behind(monkeypatch):
    """No work directory and no process of the runs this test made may outlive it."""
    made, tokens = [], []
    make_workdir, make_token = runner.private_workdir, runner.new_token
    monkeypatch.setattr(runner, "private_workdir", lambda: made.append(make_workdir()) or made[-1])
    monkeypatch.setattr(runner, "new_token", lambda: tokens.append(make_token()) or tokens[-1])
    yield
    assert [path for path in made if os.path.exists(path)] == []
    for proc in psutil.process_iter():
        try:
            assert proc.environ().get(runner.TOKEN_VARIABLE) not in tokens, f"left running: {proc}"
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass


def test_a_hanging_probe_is_killed_at_its_deadline_and_keeps_what_it_measured(run_broken):
    started = time.monotonic()
    result = run_broken("hang")
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert DEADLINE <= elapsed < DEADLINE + 1.5
    assert "deadline" in result.message
    assert result.observations == {"broken.before_hang": {"value": "ok"}}


def test_a_daemon_that_escaped_the_process_group_is_found_killed_and_reported(run_broken):
    result = run_broken("grandchild")
    assert result.status == "ok"
    assert result.observations == {"broken.ok": {"value": "ok"}}
    assert len(result.left_processes) == 1
    # Forked, never exec'd: it shows the command line of the process it was forked from.
    assert re.search(r"grandchild\.py|runpy\.run_module", result.left_processes[0]["cmdline"])
    assert not psutil.pid_exists(result.left_processes[0]["pid"]) or \
        psutil.Process(result.left_processes[0]["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_crash_is_reported_with_its_signal_and_stderr(run_broken):
    result = run_broken("crash")
    assert result.status == "crashed"
    assert result.signal == "SIGSEGV"
    assert "about to crash" in result.stderr_tail
    assert "SIGSEGV" in result.message


def test_output_that_is_not_json_is_an_error_that_quotes_it(run_broken):
    result = run_broken("garbage")
    assert result.status == "invalid-output"
    assert "this is not a JSON document" in result.message


def test_files_a_probe_leaves_are_reported_and_removed(run_broken):
    result = run_broken("leaves_file")
    assert result.status == "ok"
    assert result.left_files == ["forgotten"]


def test_a_probe_flooding_its_output_cannot_block_the_runner(run_broken):
    started = time.monotonic()
    result = run_broken("floods_output")
    assert result.status == "timeout"
    assert time.monotonic() - started < DEADLINE + 2


def test_a_probe_that_cannot_start_is_a_failure_not_an_exception():
    result = runner.run("broken", DEADLINE, command=["/nonexistent/python"])
    assert result.status == "failed"
    assert "could not start" in result.message


def test_a_real_family_runs_isolated_in_a_private_short_directory():
    result = runner.run("dgram", 20)
    assert result.status == "ok", result.message
    assert result.observations["dgram.truncation.received"]["value"] == "ABC"
    assert result.left_files == [] and result.left_processes == []


def test_work_directories_are_private_and_short():
    path = runner.private_workdir()
    try:
        assert Path(path).stat().st_mode & 0o777 == 0o700
        assert len(path) <= 20  # leaves room in a 104-byte sun_path for deep names
    finally:
        Path(path).rmdir()


def test_an_interrupted_runner_still_kills_the_probe_and_removes_its_directory(run_broken, monkeypatch):
    def interrupted(process, timeout):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "wait_for_exit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_broken("hang")  # the autouse fixture checks the process and directory are gone


def test_the_progress_file_salvages_every_complete_line(tmp_path):
    (tmp_path / runner.PROGRESS_FILE).write_text(
        '{"a.b": {"value": 1}}\n{"a.c": {"error": "x"}}\n{"a.d": {"val')
    assert runner.salvage_progress(str(tmp_path)) == {"a.b": {"value": 1}, "a.c": {"error": "x"}}
