"""Running the pipe, fifo, shm and sem families leaves nothing behind: no shm object or
named semaphore in /dev/shm, no file in the work directory, no process.

Each family runs as `ipcmatrix run` runs it, through ipcmatrix.runner.run.  The name
searches are also cut short on purpose, right after creating an object: every name
created so far must still be unlinked.
"""
import os
import sys

import psutil
import pytest

from ipcmatrix import runner
from ipcmatrix.probes import _libc, harness, sem, shm
from probe_runs import named_by

FAMILIES = ["pipe", "fifo", "shm", "sem", "pthread"]
DEADLINE = 20
DEV_SHM = "/dev/shm"
OURS = named_by()   # the random part may be all digits: the pid is what comes before it

pytestmark = pytest.mark.skipif(not os.path.isdir(DEV_SHM),
                                reason="no /dev/shm here to look for leftover objects")


def ours_in_dev_shm():
    return {name for name in os.listdir(DEV_SHM) if OURS.match(name)}


def leaked(names):
    """Those of ``names`` whose creator has exited and that still exist.

    Tests running in parallel create and remove objects of their own; a name whose
    creator (the pid in the name) is alive may be about to be unlinked.  Checking the
    creator first, then the file, never blames a process that was still cleaning up.
    """
    found = set()
    for name in names:
        creator = OURS.match(name) and int(OURS.match(name).group("pid"))
        if creator and psutil.pid_exists(creator) and \
                psutil.Process(creator).status() != psutil.STATUS_ZOMBIE:
            continue
        if os.path.exists(os.path.join(DEV_SHM, name)):
            found.add(name)
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_run_leaves_nothing_behind(family):
    before = set(os.listdir(DEV_SHM))
    run = runner.run(family, DEADLINE)
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert [k for k, r in run.observations.items() if "error" in r] == []
    assert run.left_files == [] and run.left_processes == []
    assert leaked(set(os.listdir(DEV_SHM)) - before) == set()
    assert run.elapsed_s < 5, "a family should take well under a second or two"


def interrupted_on_call(real, call_number):
    """``real``, except that call ``call_number`` creates its object and then is interrupted,
    as by the SIGALRM budget arriving just after the C call returned."""
    calls = []

    def create_then_interrupt(name, *args):
        calls.append(name)
        handle = real(name, *args)
        if len(calls) == call_number:
            raise harness.Overrun("interrupted right after creating " + name)
        return handle
    return create_then_interrupt, calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc's /dev/shm names")
@pytest.mark.parametrize("family, create, search", [
    ("shm", "shm_open", lambda: shm.shm_name_limit.__wrapped__()),
    ("sem", "sem_open", lambda: sem.sem_name_limit.__wrapped__()),
])
def test_names_are_unlinked_when_a_search_is_cut_short(monkeypatch, family, create, search):
    before = ours_in_dev_shm()
    fake, calls = interrupted_on_call(getattr(_libc, create), 4)
    monkeypatch.setattr(_libc, create, fake)
    with pytest.raises(harness.Overrun):
        search()
    assert len(calls) == 4
    assert ours_in_dev_shm() - before == set()


KILLED_HOLDING_NAMES = """
import os, time
from ipcmatrix.probes import _libc, harness
names = _libc.Names(_libc.sem_unlink)
sem = _libc.sem_open(names.add(harness.unique_name("k")), os.O_CREAT | os.O_EXCL, 0o600, 0)
shm_names = _libc.Names(_libc.shm_unlink)
fd = _libc.shm_open(shm_names.add(harness.unique_name("k")), os.O_CREAT | os.O_RDWR, 0o600)
print("holding", flush=True)
time.sleep(60)   # killed at its deadline, long before it could unlink anything
"""


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="named objects are not files here")
def test_names_of_a_probe_killed_at_its_deadline_are_removed_by_the_runner():
    """SIGKILL leaves a probe no chance to unlink: the runner does, from the run's record."""
    result = runner.run("fake", 1.5, command=[sys.executable, "-I", "-c", KILLED_HOLDING_NAMES])
    assert result.status == "timeout"
    kinds = sorted(entry["kind"] for entry in result.left_ipc_objects)
    assert kinds == ["posix-sem", "posix-shm"]
    for entry in result.left_ipc_objects:
        file = ("sem." if entry["kind"] == "posix-sem" else "") + entry["name"].lstrip("/")
        assert not os.path.exists(os.path.join("/dev/shm", file))
