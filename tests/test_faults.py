"""Faults from outside the probes: Ctrl-C in the middle of a parallel run, a probe killed
by SIGKILL, a report directory on a read-only filesystem.  Each ends with a clear message,
a report of what was measured, and nothing left behind."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ipcmatrix import report, runner

REPO = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).parent / "broken_probes"


def test_a_probe_killed_by_sigkill_is_reported_with_what_it_measured():
    result = runner.run("broken", 5, command=[sys.executable, "-I", str(BROKEN / "kills_itself.py")])
    assert result.status == "crashed" and result.signal == "SIGKILL"
    assert result.observations == {"broken.measured": {"value": 1}}


def wait_for(path, timeout):
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)  # test-side polling of another process's file: no event to wait on


def test_ctrl_c_in_a_parallel_run_writes_an_incomplete_report_and_stops_everything(tmp_path):
    ready = tmp_path / "ready"
    blocker = tmp_path / "test_blocker.py"
    blocker.write_text(textwrap.dedent(f'''
        import signal
        from pathlib import Path

        def test_blocks_until_interrupted(conformance):
            conformance.probe("dgram")          # measured before Ctrl-C arrives
            Path({str(ready)!r}).touch()
            signal.pause()
    '''))
    out = tmp_path / "r.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "ipcmatrix.cli", "run", "-n", "2", "-k", "seed", "--json", str(out),
         "--", str(blocker), f"--rootdir={REPO}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        process_group=0)
    try:
        wait_for(ready, 60)
        tree = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, signal.SIGINT)     # what a terminal's Ctrl-C does
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 2, output
    data = report.read(out)
    assert data["complete"] is False
    assert data["observations"]["dgram.zero_length"]["verdict"] == "match"
    assert "INCOMPLETE" in output
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], f"still running after Ctrl-C: {alive}"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) is not installed")
def test_a_read_only_report_directory_is_a_clear_error(tmp_path):
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow a private mount namespace (unshare -m)")
    target = tmp_path / "ro"
    target.mkdir()
    script = (f"mount -t tmpfs -o ro tmpfs {target} && "
              f"exec {sys.executable} -m ipcmatrix.cli run -n 0 -k dgram --json {target}/r.json")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert "could not write the report" in done.stdout and "Read-only file system" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def broken_runs_under_a_subreaper(names):
    """In a child that is a subreaper (orphans come to it, not to init), run broken probes
    and return the pids of any process that is still its descendant afterwards."""
    import ctypes
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(reader)
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
            for name in names:
                runner.run("broken", 3, command=[sys.executable, "-I", str(BROKEN / f"{name}.py")])
            alive = [p.pid for p in psutil.Process().children(recursive=True)
                     if p.status() != psutil.STATUS_ZOMBIE]
            os.write(writer, json.dumps(alive).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the subreaper child failed"
    return json.loads(text)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_CHILD_SUBREAPER is Linux-only")
def test_no_orphan_escapes_even_to_a_subreaper():
    assert broken_runs_under_a_subreaper(["grandchild", "hang", "floods_output", "crash"]) == []
