"""No false verdicts, no lost results: the harness and the runner under load, stopped
processes, slow machines, signals, lost workers and report targets that are not files.

Each test reproduces one way a healthy platform was once reported wrong (a lost value,
a "blocks" that was a fork, a red timing), or a run that lost its report or hung."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from ipcmatrix import compare, report, runner, session, verdict
from probes import harness

REPO = Path(__file__).resolve().parent.parent


# --- the harness keeps what a child sent, and refuses a result with no cause ---------------

def answer_after_a_grandchild_lets_go():
    """Return at once, but a grandchild keeps the result pipe open 0.3 s: the parent's
    first short wait ends before EOF, as it did beside CPU load."""
    if os.fork() == 0:
        time.sleep(0.3)
        os._exit(0)
    return ["[1](ABC)", "[2](ABC)"]


def test_a_wait_that_ends_before_eof_loses_nothing_the_next_wait_needs():
    with harness.Child(answer_after_a_grandchild_lets_go) as child:
        assert child.wait(0.05) is None
        result = child.wait(5)
    assert result.value == ["[1](ABC)", "[2](ABC)"] and result.error is None


def test_a_child_that_exits_without_an_answer_is_an_error_not_a_null():
    with harness.Child(os._exit, 0) as child:
        result = child.wait(5)
    assert result.value is None and "without sending a result" in result.error


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_killed_by_a_signal_reports_the_signal():
    with harness.Child(kill_myself) as child:
        result = child.wait(5)
    assert result.signal_name == "SIGKILL" and result.error is None


# --- one multiplier scales every bound, once -----------------------------------------------

def test_every_bound_the_harness_is_given_scales_once(monkeypatch):
    monkeypatch.setenv(harness.ENV_MULTIPLIER, "4")
    monkeypatch.setenv(harness.ENV_BLOCK_WINDOW, "0.1")
    assert harness.block_window() == pytest.approx(0.4)
    assert harness.scaled(harness.block_window()) == pytest.approx(0.4)  # not 1.6
    assert harness.scaled(5.0) == pytest.approx(20.0)


def sleep_then_answer(seconds):
    time.sleep(seconds)
    return "done"


def test_in_child_waits_longer_under_a_multiplier(monkeypatch):
    with pytest.raises(harness.Overrun):
        harness.in_child(sleep_then_answer, 0.4, timeout=0.1)
    monkeypatch.setenv(harness.ENV_MULTIPLIER, "20")
    assert harness.in_child(sleep_then_answer, 0.4, timeout=0.1).value == "done"


# --- "blocks" only for a child confirmed inside its call -----------------------------------

def stop_myself_then_return():
    os.kill(os.getpid(), signal.SIGSTOP)  # stopped after STARTED, before "the call"
    return "ok"


def test_a_stopped_child_is_not_reported_as_blocked():
    with harness.Child(stop_myself_then_return) as child:
        threading.Timer(0.5, os.kill, (child.pid, signal.SIGCONT)).start()
        result = child.wait_blocked(window=0.05)
    assert result != harness.BLOCKS and result.value == "ok"


def test_a_child_asleep_in_a_read_is_blocked():
    reader, writer = os.pipe()
    try:
        with harness.Child(os.read, reader, 1) as child:
            assert child.wait_blocked(window=0.05) == harness.BLOCKS
    finally:
        os.close(reader)
        os.close(writer)


def burn():
    """A CPU-bound process for the load tests (killed by the test)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stop_and_continue_trees(roots, stop_event):
    """SIGSTOP, then 0.15 s later SIGCONT, every process under ``roots()``, again and again."""
    while not stop_event.is_set():
        tree = []
        for root in roots():
            try:
                tree += [root] + root.children(recursive=True)
            except psutil.Error:
                continue
        for proc in tree:
            with_suppressed(proc.send_signal, signal.SIGSTOP)
        time.sleep(0.15)
        for proc in tree:
            with_suppressed(proc.send_signal, signal.SIGCONT)
        time.sleep(0.05)


def with_suppressed(call, *args):
    try:
        call(*args)
    except psutil.Error:
        pass


def probe_once(family, only, env=None):
    env = dict(os.environ, **(env or {}), **{harness.ENV_ONLY: only})
    return runner.run(family, 60, env=env)


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's sleeping state comes from /proc")
def test_fifo_rdwr_and_the_seed_replies_hold_beside_load_and_a_stopped_tree():
    burners = [burn(), burn()]
    try:
        for trial in range(4):
            stop = threading.Event()
            results = {}

            def measure():
                results["fifo"] = probe_once("fifo", "fifo.open_rdwr")
                results["seed"] = probe_once("seed", "seed.example.replies")

            worker = threading.Thread(target=measure)
            worker.start()
            # Stop and continue every probe process tree this test starts, whatever it is.
            me, burning = psutil.Process(), {b.pid for b in burners}
            pauser = threading.Thread(target=stop_and_continue_trees, args=(
                lambda: [c for c in me.children() if c.pid not in burning], stop))
            pauser.start()
            worker.join(120)
            stop.set()
            pauser.join(10)
            fifo, seed = results["fifo"].observations, results["seed"].observations
            assert fifo["fifo.open_rdwr"].get("value") == "ok", (trial, fifo)
            replies = seed["seed.example.replies"]
            assert replies.get("value") is not None or replies.get("error"), (trial, replies)
            assert replies.get("value") == [f"[{i}](ABC)" for i in range(1, 9)], (trial, replies)
    finally:
        for b in burners:
            b.kill()
            b.wait()


# --- timings: reported, never red --------------------------------------------------------------

SPEED_ENTRY = {"at_least": "1.0", "ref": "notes", "evidence": "observed"}


def test_a_timing_below_its_claim_is_reported_not_failed():
    names = verdict.Names({}, lambda key: None)
    record = verdict.judge("speed.unix_stream_over_tcp", {"value": 0.9, "detail": {"tcp": 1}},
                           SPEED_ENTRY, names, "speed", timing=True)
    assert record["verdict"] == "timing" and record["held"] is False
    assert record["value"] == 0.9 and record["detail"] == {"tcp": 1}
    assert "did not hold" in verdict.explain_failure("speed.unix_stream_over_tcp", record)
    assert "timing" in verdict.VERDICTS
    assert session.is_timing("speed") and not session.is_timing("dgram")


def test_compare_different_ignores_timing_noise():
    def run(value, held):
        return {"observations": {"speed.tcp_roundtrip_us": {
            "value": value, "verdict": "timing", "held": held, "timing": True}}}
    assert compare._result(run(9.7, True)["observations"]["speed.tcp_roundtrip_us"]) == \
        compare._result(run(22.1, True)["observations"]["speed.tcp_roundtrip_us"])
    assert compare._result(run(9.7, True)["observations"]["speed.tcp_roundtrip_us"]) != \
        compare._result(run(3000, False)["observations"]["speed.tcp_roundtrip_us"])


def ipcmatrix_run(*args, root, **popen):
    """`ipcmatrix run` with its private directories under ``root`` (so a test can see
    that nothing is left) and a mark in its environment (so it can find its processes)."""
    env = dict(os.environ, IPCMATRIX_WORK_ROOT=str(root), TMPDIR=str(root), H12_MARK=str(root))
    return subprocess.Popen([sys.executable, "-m", "ipcmatrix.cli", "run", *map(str, args)],
                            cwd=REPO, env=env, text=True, process_group=0,
                            stdout=popen.pop("stdout", subprocess.PIPE),
                            stderr=popen.pop("stderr", subprocess.STDOUT), **popen)


def marked_processes(root):
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("H12_MARK") == str(root) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def root():
    """A short private directory (socket paths!) for one run's work and session dirs."""
    path = Path(tempfile.mkdtemp(prefix="ipcmt", dir="/tmp"))
    yield path
    for proc in marked_processes(path):
        with_suppressed(proc.kill)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_a_run_whose_timing_claim_fails_still_passes_unless_asked(root, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    linux = (REPO / "ipcmatrix/tables/linux.toml").read_text()
    (tables / "linux.toml").write_text(linux.replace(
        '["speed.tcp_roundtrip_us"]\nrange = [1, 2000]', '["speed.tcp_roundtrip_us"]\nrange = [0.001, 0.002]'))
    out = root / "r.json"
    done = ipcmatrix_run("-k", "speed", "--tables", tables, "--json", out, root=root)
    output, _ = done.communicate(timeout=120)
    record = report.read(out)["observations"]["speed.tcp_roundtrip_us"]
    assert done.returncode == 0, output
    assert record["verdict"] == "timing" and record["held"] is False
    asserted = ipcmatrix_run("-k", "speed", "--tables", tables, "--json", out, "--assert-timings",
                             root=root)
    output, _ = asserted.communicate(timeout=120)
    assert asserted.returncode == 1 and "did not hold" in output


# --- signals end a run at once, with its report ------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_one_second_in_leaves_a_report_and_nothing_else(signum, root):
    out = root / "r.json"
    # A whole run takes under a second here; four times its windows keep it going at 1 s.
    process = ipcmatrix_run("--json", out, "--timeout-multiplier", "4", root=root)
    time.sleep(1.0)
    assert process.poll() is None, "the run ended before the signal could test anything"
    sent = time.monotonic()
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    took = time.monotonic() - sent
    assert took < 2.0, f"still running {took:.2f} s after {signum.name}"
    assert process.returncode == 2, output
    data = report.read(out)
    assert data["complete"] is False
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert marked_processes(root) == []
    assert sorted(p.name for p in root.iterdir()) == ["r.json"]


@pytest.mark.parametrize("delay", [0.8, 1.6])
def test_ctrl_c_while_workers_start_prints_no_tracebacks(delay, root):
    """Ctrl-C reaches the whole process group, workers still importing included."""
    out = root / "r.json"
    process = ipcmatrix_run("-n", "2", "--json", out, root=root)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "Traceback" not in output and "Fatal Python error" not in output, output
    assert report.read(out)["complete"] is False
    assert marked_processes(root) == []


BLOCKER = '''
import signal
from pathlib import Path

def test_blocks_until_interrupted(conformance):
    conformance.probe("dgram")
    Path({ready!r}).touch()
    signal.pause()
'''


def blocker(tmp_path):
    ready = tmp_path / "ready"
    test = tmp_path / "test_blocker.py"
    test.write_text(textwrap.dedent(BLOCKER.format(ready=str(ready))))
    return test, ready


def wait_for(path, timeout):
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)  # another process's file: no event to wait on


def test_a_killed_worker_ends_the_run_with_its_report(root, tmp_path):
    test, ready = blocker(tmp_path)
    out = root / "r.json"
    process = ipcmatrix_run("-n", "2", "-k", "seed", "--json", out, "--", test,
                            f"--rootdir={REPO}", root=root)
    try:
        wait_for(ready, 60)
        workers = [c for c in psutil.Process(process.pid).children()
                   if "exec(eval(" in " ".join(c.cmdline())]
        assert workers, "no xdist worker found"
        for worker in workers:
            with_suppressed(worker.kill)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    data = report.read(out)
    assert data["complete"] is False
    assert data["observations"]["seed.example.replies"]["verdict"] == "match"
    assert "died" in output
    assert marked_processes(root) == []


def test_the_run_deadline_ends_a_run_that_would_never_end(root, tmp_path):
    test, ready = blocker(tmp_path)
    out = root / "r.json"
    started = time.monotonic()
    process = ipcmatrix_run("-k", "seed", "--json", out, "--", test, f"--rootdir={REPO}",
                            "--ipcmatrix-run-deadline=8", root=root)
    output, _ = process.communicate(timeout=60)
    assert time.monotonic() - started < 30, output
    assert process.returncode == 2, output
    assert "deadline" in output
    assert report.read(out)["complete"] is False
    assert marked_processes(root) == []


# --- report targets ----------------------------------------------------------------------------

def test_json_dash_puts_the_report_alone_on_stdout(root):
    process = ipcmatrix_run("-k", "socketpair", "--json", "-", root=root, stderr=subprocess.PIPE)
    output, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors
    data = json.loads(output)
    assert data["schema"] == report.SCHEMA and data["complete"] is True
    assert "passed" in errors


def test_a_directory_as_json_is_a_clear_error_and_nothing_runs(root):
    process = ipcmatrix_run("-k", "socketpair", "--json", root, root=root)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "is a directory" in output
    assert "Traceback" not in output and list(root.iterdir()) == []


def test_a_report_that_cannot_be_written_fails_the_run(root):
    blocked = root / "file"
    blocked.write_text("")
    process = ipcmatrix_run("-k", "socketpair", "--json", blocked / "r.json", root=root)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 6 and "could not write the report" in output


def test_a_symlink_to_a_regular_file_replaces_the_file_not_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    report.write({"schema": report.SCHEMA}, link)
    assert link.is_symlink() and json.loads(target.read_text()) == {"schema": report.SCHEMA}


def in_private_mount_namespace(script):
    """Run ``script`` (sh) inside ``unshare -m`` with a tmpfs over /dev: the device nodes
    it makes and the run it starts never see the host's /dev."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow a private mount namespace (unshare -m)")
    setup = ("mount --make-rprivate / && mount -t tmpfs tmpfs /dev && "
             "mknod -m 666 /dev/null c 1 3 && ln -s /proc/self/fd /dev/fd && "
             "ln -s /proc/self/fd/1 /dev/stdout && ")
    return subprocess.run(["unshare", "-m", "sh", "-c", setup + script], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform != "linux", reason="unshare(1) and mknod are Linux here")
@pytest.mark.parametrize("target", ["/dev/null", "/dev/stdout"])
def test_a_device_or_a_link_to_one_is_refused_and_left_alone(target):
    done = in_private_mount_namespace(
        f"{sys.executable} -m ipcmatrix.cli run -k socketpair --json {target} </dev/null "
        f"| cat; echo rc=$?; stat -L -c %F {target}; stat -c %F /dev/stdout /dev/null")
    assert "is not a regular file" in done.stderr, done.stderr
    assert "character special file" in done.stdout or "fifo" in done.stdout, done.stdout
    assert "regular" not in done.stdout, done.stdout


# --- a slow machine ----------------------------------------------------------------------------

def test_a_slow_interpreter_start_asks_for_a_multiplier():
    assert session.multiplier_for(0.04) == 1.0
    assert session.multiplier_for(6.0) == 12.0


def test_a_timed_out_run_says_which_multiplier_to_try(root, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    linux = (REPO / "ipcmatrix/tables/linux.toml").read_text()
    (tables / "linux.toml").write_text(linux.replace("probe_deadline_s = ", "probe_deadline_s = 0.01 #", 1))
    out = root / "r.json"
    # sem: no key of it can be measured within 0.01 s (socketpair's all can, now and then,
    # and a key measured before the deadline is kept as measured)
    process = ipcmatrix_run("-k", "sem", "--tables", tables, "--json", out, root=root)
    output, _ = process.communicate(timeout=120)
    records = report.read(out)["observations"].values()
    assert process.returncode == 1
    assert all(r["verdict"] == "timeout" for r in records)
    assert all("--timeout-multiplier 2" in r["hint"] for r in records)
    assert "TIMEOUTS:" in output and "--timeout-multiplier 2" in output


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


@pytest.mark.skipif(not (CGROUP_CPU / "cpu.cfs_quota_us").exists() or os.geteuid() != 0,
                    reason="needs the cgroup v1 cpu controller, as root")
def test_a_run_throttled_to_a_slow_machine_scales_itself_and_still_matches(root):
    """A cgroup of our own with 4% of one CPU (an emulated guest, roughly): the machine is
    noticed as slow, the bounds scale, and every key of families that wait on children
    still matches."""
    group = CGROUP_CPU / f"ipcm-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_quota_us").write_text("4000")  # 4 ms of every 100 ms
        out = root / "r.json"
        process = ipcmatrix_run("-k", "fifo", "-k", "seed", "--json", out, root=root,
                                preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        output, _ = process.communicate(timeout=600)
        data = report.read(out)
        assert process.returncode == 0, output
        assert data["summary"]["match"] == sum(data["summary"].values())
        run = data["run"]
        assert run["interpreter_start_s"] > session.SLOW_START_S, run
        assert run["timeout_multiplier"] == session.multiplier_for(run["interpreter_start_s"]) > 1
        assert "SLOW MACHINE" in output and run["slow_machine"]
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with_suppressed(psutil.Process(int(pid)).kill)
        time.sleep(0.2)
        group.rmdir()


# --- a stop and SIGCONT interrupt a bounded connect: only a C-like connect stays right -----------

def connect_to_a_full_backlog(connect_with, window):
    """In a scratch directory: fill listen(0)'s backlog, then a blocking connect bounded by
    SO_SNDTIMEO, as stream.backlog_full.blocking_connect does.  Returns the outcome."""
    import shutil
    workdir = tempfile.mkdtemp(prefix="ipcmc", dir="/tmp")
    os.chdir(workdir)
    try:
        return _connect_to_a_full_backlog(connect_with, window)
    finally:
        shutil.rmtree(workdir)


def _connect_to_a_full_backlog(connect_with, window):
    import socket
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("l")
    listener.listen(0)
    pending = []
    while True:
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.setblocking(False)
        try:
            extra.connect("l")
        except BlockingIOError:
            break
        pending.append(extra)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return harness.bounded_send(client, lambda: connect_with(client), window=window)


def stopped_and_continued_during(fn, *args):
    """``fn(*args)`` in a child that is stopped 0.2 s into its call and continued 0.2 s later."""
    with harness.Child(fn, *args) as child:
        child.wait_started()
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGCONT)
        return child.wait(10).value


@pytest.mark.skipif(sys.platform != "linux", reason="signal(7): Linux's EINTR after SIGCONT")
def test_a_stopped_connect_still_blocks_where_pythons_connect_says_ok():
    as_c = stopped_and_continued_during(
        connect_to_a_full_backlog, lambda s: harness.connect_as_c(s, "l"), 1.0)
    assert as_c == harness.BLOCKS
    # The control: Python's own connect turns the EINTR into a false success.
    as_python = stopped_and_continued_during(connect_to_a_full_backlog, lambda s: s.connect("l"), 1.0)
    assert as_python == harness.OK


def test_connect_as_c_connects_and_names_a_refusal(tmp_path, monkeypatch):
    import socket
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("l")
        listener.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            harness.connect_as_c(client, "l")
            assert client.getpeername() == "l"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        assert harness.outcome(harness.connect_as_c, client, "l") == "ECONNREFUSED"
