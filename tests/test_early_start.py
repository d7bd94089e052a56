"""A run begins before it has read its tables: the families that run alone are measured
while the kit imports, the others only once the tables are in, and a run that stops
before then (a broken table, a signal) leaves nothing behind."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipcmatrix import catalogue, expectations, session
from ipcmatrix.probes import harness

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ["speed", "socketpair"]


@pytest.fixture
def begun():
    """A session begun early on speed (runs alone) and socketpair (does not)."""
    directory = session.begin(FAMILIES)
    assert directory, "this platform's [platform] blocks could not be read alone"
    yield directory
    # Let it finish rather than stop it: cancelling is once per process, for good.
    conformance, _thread = session.adopt(directory)
    session.start_early(FAMILIES, tables=expectations.load_all(), begun=directory)
    assert conformance.prefetched.wait(60)
    session.stop_early(directory)
    shutil.rmtree(directory, ignore_errors=True)


def wait_for_file(path, limit=30.0):
    end = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def test_the_families_that_run_alone_are_measured_before_the_tables_are_in(begun):
    directory = Path(begun)
    wait_for_file(directory / "speed.json")
    time.sleep(0.2)   # the others wait for the tables, however long that takes
    assert not (directory / "socketpair.json").exists()
    conformance, _thread = session.adopt(begun)
    assert conformance.table.entries == {}   # only the [platform] block so far
    session.start_early(FAMILIES, tables=expectations.load_all(), begun=begun)
    assert conformance.prefetched.wait(30)
    assert (directory / "socketpair.json").exists()
    assert conformance.table.entries   # the whole table, to judge by
    assert conformance.check("socketpair.stream")["verdict"] == "match"


def test_the_settings_a_begun_probe_gets_are_the_tables_own(begun):
    conformance, _thread = session.adopt(begun)
    early = conformance.probe_environment()
    table = next(t for t in expectations.load_all() if t.path == conformance.table.path)
    conformance.use_tables([table])
    assert conformance.probe_environment() == early
    assert early[harness.ENV_BLOCK_WINDOW] == str(table.setting("block_window_s"))


def test_runs_alone_is_read_from_the_source_as_the_module_declares_it():
    for family in catalogue.families():
        module = __import__(f"ipcmatrix.probes.{family}", fromlist=["x"])
        assert catalogue.runs_alone(family) == bool(getattr(module, "RUNS_ALONE", False)), family
    assert catalogue.runs_alone("speed")


def test_a_broken_table_stops_a_run_begun_early_with_nothing_left(tmp_path):
    tables = tmp_path / "tables"
    shutil.copytree(expectations.TABLES_DIR, tables)
    linux = tables / "linux.toml"
    linux.write_text(linux.read_text().replace('expect = "EMSGSIZE"', 'expect = "EMSGSIZE"\nmachine = 3', 1))
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, IPCMATRIX_WORK_ROOT=str(work), TMPDIR=str(work))
    done = subprocess.run([sys.executable, "-m", "ipcmatrix", "run", "--tables", str(tables),
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "linux.toml:" in done.stderr and "machine" in done.stderr
    assert not (tmp_path / "r.json").exists()
    assert list(work.iterdir()) == []   # the session and speed's private directory are gone


def test_a_run_that_cannot_begin_early_goes_on_without_it(monkeypatch):
    from ipcmatrix import start

    def out_of_fds(*args, **kwargs):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(session, "begin", out_of_fds)
    assert start.begin_run(["run", "-k", "socketpair"]) is None
    assert session.started_early() is None


def test_only_a_run_that_measures_begins_early(monkeypatch):
    from ipcmatrix import start
    begun = []
    monkeypatch.setattr(session, "begin", lambda families, *rest: begun.append(families) or None)
    for argv in (["list"], ["check"], ["run", "--", "--co"], ["run", "--timeout-multiplier", "0"]):
        start.begin_run(argv)
    assert begun == []
    start.begin_run(["run", "-k", "socketpair", "-k", "nonesuch"])
    assert begun == [["socketpair"]]   # an unknown family is the command's to report
