"""The mq and sysv families: clean runs, the runner's check for System V objects and
message queues, and the paths platforms without a function take.

System V objects and message queues outlive every process, so these tests look only at
the objects their own runs recorded (by key or name), never at the whole system, which
colleagues' runs share.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipcmatrix import platform, runner
from ipcmatrix.probes import _libc, _sysv, mq
from probe_runs import values_of

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="measured here on Linux")


@pytest.fixture
def recorded(monkeypatch):
    """Every (kind, key or name) the runs in this test recorded, as the runner read them."""
    seen = []
    real = _sysv.read_record

    def reading(path):
        pairs = real(path)
        seen.extend(pairs)
        return pairs

    monkeypatch.setattr(_sysv, "read_record", reading)
    return seen


def still_there(kind, name):
    """Whether the object recorded as (kind, name) exists now."""
    if kind == "mq":
        try:
            mq.mq_close(mq.mq_open(name, os.O_RDONLY))
        except OSError:
            return False
        return True
    try:
        _sysv.GET[kind](int(name))
    except OSError:
        return False
    return True


def sysvipc_keys():
    """Keys in /proc/sysvipc/{shm,sem,msg} now (what `ipcs` lists)."""
    keys = set()
    for kind in ("shm", "sem", "msg"):
        with open(f"/proc/sysvipc/{kind}") as table:
            next(table)
            keys |= {(kind, line.split()[0]) for line in table}
    return keys


@pytest.mark.parametrize("family", ["mq", "sysv"])
def test_a_family_run_is_clean_fast_and_removes_every_object_it_recorded(family, recorded):
    before = sysvipc_keys()
    run = runner.run(family, DEADLINE)
    values_of(run, every_key=True)
    assert run.left_ipc_objects == []
    assert recorded, "the probe recorded no object at all: the runner could not have checked"
    assert [pair for pair in recorded if still_there(*pair)] == []
    assert {pair for pair in sysvipc_keys() - before if pair in set(recorded)} == set()
    assert run.elapsed_s < 5


LEAKY_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
from ipcmatrix.probes import _sysv, harness, mq
_sysv.create("msg", lambda key: _sysv.msgget(key, _sysv.IPC_CREAT | _sysv.IPC_EXCL | 0o600))
_sysv.create("sem", lambda key: _sysv.semget(key, 1, _sysv.IPC_CREAT | _sysv.IPC_EXCL | 0o600))
_sysv.create("shm", lambda key: _sysv.shmget(key, 4096, _sysv.IPC_CREAT | _sysv.IPC_EXCL | 0o600))
_sysv.shmget(_sysv.IPC_PRIVATE, 4096, 0o600)        # unrecorded: found by its creator pid
mq.mq_open(harness.unique_name("leak"), os.O_CREAT | os.O_EXCL | os.O_RDWR)
print('{{"family": "leaky", "observations": {{}}}}')
"""


def test_the_runner_finds_and_removes_what_a_probe_left(recorded):
    command = [sys.executable, "-I", "-c", LEAKY_PROBE.format(repo=str(REPO))]
    run = runner.run("leaky", DEADLINE, command=command)
    assert run.status == "ok", (run.message, run.stderr_tail)
    kinds = sorted(item["kind"] for item in run.left_ipc_objects)
    assert kinds == ["mq", "msg", "sem", "shm", "shm-id"]
    assert [pair for pair in recorded if still_there(*pair)] == []
    private = [item["name"] for item in run.left_ipc_objects if item["kind"] == "shm-id"]
    with open("/proc/sysvipc/shm") as table:
        assert private[0] not in {line.split()[1] for line in table}
    assert run.left_files == [], "the record itself is the runner's, not a leftover file"


def test_a_key_someone_else_holds_is_never_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(_sysv.ENV_WORKDIR, str(tmp_path))
    flags = _sysv.IPC_CREAT | _sysv.IPC_EXCL | 0o600
    key, theirs = _sysv.create("msg", lambda key: _sysv.msgget(key, flags))
    try:
        keys = iter([key, key + 1])
        monkeypatch.setattr(_sysv, "fresh_key", lambda: next(keys))
        mine_key, mine = _sysv.create("msg", lambda key: _sysv.msgget(key, flags))
        assert mine_key == key + 1
        path = tmp_path / _sysv.RECORD_FILE
        # Our own first object (a colleague's, as far as the second create knows) is taken.
        assert _sysv.read_record(str(path)) == [("msg", str(key + 1))]
        _sysv.msg_remove(mine)
    finally:
        _sysv.msg_remove(theirs)


def probe_values(family, env):
    done = subprocess.run([sys.executable, "-I", "-m", f"ipcmatrix.probes.{family}"], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    return {k: r.get("value", r.get("error"))
            for k, r in json.loads(done.stdout)["observations"].items()}


def test_without_mq_functions_every_mq_key_is_unsupported_as_on_macos():
    values = probe_values("mq", {_libc.ENV_MISSING: "mq_open"})
    assert set(values.values()) == {"unsupported"}


def test_without_semtimedop_the_timed_key_is_unsupported_and_the_rest_still_measured():
    values = probe_values("sysv", {_libc.ENV_MISSING: "semtimedop",
                                   "IPCMATRIX_ONLY": "sysv.sem.timedop,sysv.sem.undo_on_exit"})
    assert values == {"sysv.sem.timedop": "unsupported", "sysv.sem.undo_on_exit": True}


def test_a_failing_mq_open_makes_the_other_keys_unsupported_with_the_reason():
    # FreeBSD without mqueuefs: the functions exist, the system call does not (ENOSYS).
    assert mq.missing() is None
    result = subprocess.run(
        [sys.executable, "-I", "-c",
         "import sys; sys.path.insert(0, %r)\n"
         "from ipcmatrix.probes import mq\n"
         "mq.support = lambda: 'ENOSYS'\n"
         "print(mq.missing().value, mq.missing().detail, mq.supported())" % str(REPO)],
        capture_output=True, text=True, timeout=30)
    assert result.stdout.split()[0] == "unsupported"
    assert "ENOSYS" in result.stdout


def test_ipc_tunables_are_read_from_proc_sys_and_sysctl(tmp_path):
    for name, value in {"kernel.msgmnb": "16384", "fs.mqueue.msg_default": "10",
                        "kernel.sem": "32000\t1024000000\t500\t32000"}.items():
        path = tmp_path.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    linux = platform.read_ipc_tunables("linux", proc_sys=str(tmp_path))
    assert linux["kernel.msgmnb"] == 16384 and linux["fs.mqueue.msg_default"] == 10
    assert linux["kernel.shmmax"] is None, "unreadable is missing, never guessed"
    assert linux["kernel.sem"] == "32000\t1024000000\t500\t32000"
    names = platform.formula_names({"tunables": {}, "ipc_tunables": linux})
    assert names["msgmnb"] == 16384 and names["msg_default"] == 10

    def sysctl(argv, **options):
        known = {"kern.sysv.shmmax": "4194304"}
        lines = [known[n] for n in argv[2:] if n in known]
        return subprocess.CompletedProcess(argv, 0 if len(lines) == len(argv) - 2 else 1,
                                           "".join(l + "\n" for l in lines), "")

    macos = platform.read_ipc_tunables("macos", run=sysctl)
    assert macos["kern.sysv.shmmax"] == 4194304 and macos["kern.sysv.semmni"] is None
    assert platform.formula_names({"ipc_tunables": macos})["shmmax"] == 4194304


HANGING_PROBE = """
import sys, time
sys.path.insert(0, {repo!r})
from ipcmatrix.probes import _sysv
_sysv.create("msg", lambda key: _sysv.msgget(key, _sysv.IPC_CREAT | _sysv.IPC_EXCL | 0o600))
print("made", flush=True)
time.sleep(60)
"""


def test_a_probe_killed_at_its_deadline_still_has_its_objects_removed(recorded):
    command = [sys.executable, "-I", "-c", HANGING_PROBE.format(repo=str(REPO))]
    run = runner.run("hanging", 1.0, command=command)
    assert run.status == "timeout"
    assert [item["kind"] for item in run.left_ipc_objects] == ["msg"]
    assert recorded and [pair for pair in recorded if still_there(*pair)] == []
