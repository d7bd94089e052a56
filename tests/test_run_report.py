"""End to end: `ipcmatrix run` under xdist writes one report from the controller, fails on a
mismatch with a message that explains it, and still writes what it measured when stopped."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ipcmatrix import platform, report
from ipcmatrix.expectations import TABLES_DIR

REPO = Path(__file__).resolve().parent.parent


def ipcmatrix(*args, cwd=REPO, timeout=120):
    return subprocess.run([sys.executable, "-m", "ipcmatrix.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "r.json"
    done = ipcmatrix("run", "-n", "2", "-k", "seed", "-k", "dgram", "--json", path)
    return done, path


def test_a_parallel_run_writes_one_complete_report(parallel_run):
    done, path = parallel_run
    assert done.returncode == 0, done.stdout + done.stderr
    data = report.read(path)
    assert data["schema"] == report.SCHEMA and data["complete"] is True
    assert data["platform"]["tunables"]["net.unix.max_dgram_qlen"] is not None
    assert set(data["probes"]) == {"seed", "dgram"}
    assert all(p["status"] == "ok" for p in data["probes"].values())
    record = data["observations"]["seed.flood.deadlock_threshold"]
    assert record["verdict"] == "match"
    assert record["expected"] == record["value"]
    assert {"value", "expected", "verdict", "ref", "evidence", "probe", "rule"} <= set(record)


def test_the_summary_names_the_platform_and_the_counts(parallel_run):
    done, path = parallel_run
    assert "match" in done.stdout and f"report written to {path}" in done.stdout


def copy_of_linux_table(tmp_path, replace=None):
    tables = tmp_path / "tables"
    tables.mkdir()
    text = (TABLES_DIR / "linux.toml").read_text()
    if replace:
        old, new = replace
        assert old in text
        text = text.replace(old, new)
    (tables / "linux.toml").write_text(text)
    return tables


def test_a_mismatch_fails_the_run_and_says_key_observed_expected_rule_ref(tmp_path):
    tables = copy_of_linux_table(tmp_path, replace=(
        '["dgram.full.blocking_send"]\nexpect = "blocks"',
        '["dgram.full.blocking_send"]\nexpect = "ENOBUFS"'))
    done = ipcmatrix("run", "-n", "0", "-k", "dgram", "--tables", tables,
                     "--json", tmp_path / "r.json")
    assert done.returncode == 1
    assert "dgram.full.blocking_send: mismatch" in done.stdout
    assert 'observed: "blocks"' in done.stdout
    assert 'expected: "ENOBUFS"  (expect: "ENOBUFS")' in done.stdout
    assert "unix_wait_for_peer" in done.stdout  # the ref
    record = report.read(tmp_path / "r.json")["observations"]["dgram.full.blocking_send"]
    assert record["verdict"] == "mismatch"


def test_a_malformed_table_stops_the_run_naming_file_and_line(tmp_path):
    tables = copy_of_linux_table(tmp_path, replace=(
        'formula = "dgram.sndbuf_default - 32"', 'formula = "dgram.sndbuf_default - "'))
    done = ipcmatrix("run", "-n", "0", "-k", "dgram", "--tables", tables)
    assert done.returncode != 0
    assert f"{tables / 'linux.toml'}:" in done.stdout + done.stderr
    assert "not a formula" in done.stdout + done.stderr


def test_an_unknown_platform_skips_with_the_command_that_records_it(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    shutil.copy(TABLES_DIR / "macos.toml", tables)
    done = ipcmatrix("run", "-n", "0", "-k", "dgram", "--tables", tables,
                     "--json", tmp_path / "r.json")
    assert done.returncode == 0
    assert "ipcmatrix bless REPORT.json --platform linux-" in done.stdout
    data = report.read(tmp_path / "r.json")
    assert data["unknown_platform"] and data["summary"]["no-expectation"] == len(data["observations"])


def test_an_interrupted_run_still_writes_what_it_measured(tmp_path):
    suite = tmp_path / "test_interrupted.py"
    suite.write_text(textwrap.dedent('''
        from ipcmatrix.suite import conformance_tests

        test_dgram = conformance_tests("dgram")

        def test_zz_interrupt(conformance):
            conformance.probe("seed")      # measured, but its tests never run
            raise KeyboardInterrupt
    '''))
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "ipcmatrix.plugin",
                           "-p", "no:cacheprovider", f"--ipcmatrix-json={out}", f"--rootdir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout
    data = report.read(out)
    assert data["complete"] is False
    assert data["observations"]["dgram.zero_length"]["verdict"] == "match"
    assert data["observations"]["seed.flood.outcome"]["value"] == "deadlock"
    assert "INCOMPLETE" in done.stdout


def test_an_unwritable_report_path_is_a_clear_error_not_a_traceback(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    done = ipcmatrix("run", "-n", "0", "-k", "dgram", "--json", blocked / "r.json")
    assert "could not write the report" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_probe_prints_the_raw_json_of_one_family():
    done = ipcmatrix("probe", "dgram")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert data["status"] == "ok"
    assert data["observations"]["dgram.oversize"]["value"] == "EMSGSIZE"


def test_probe_of_an_unknown_family_lists_the_real_ones():
    done = ipcmatrix("probe", "nonsense")
    assert done.returncode == 2 and "dgram" in done.stderr


def test_list_shows_each_key_with_its_claim():
    done = ipcmatrix("list", "seed")
    lines = done.stdout.splitlines()
    assert len(lines) == 6
    assert any(line.startswith("seed.flood.deadlock_threshold") and "smallest" in line
               for line in lines)


def test_check_reports_every_problem_and_fails(tmp_path):
    (tmp_path / "bad.toml").write_text('[platform]\nsystem = "Linux"\n\n["no.such.key"]\nexpect = 1\n')
    done = ipcmatrix("check", tmp_path)
    assert done.returncode == 1
    assert f"{tmp_path / 'bad.toml'}:4: unknown observation key 'no.such.key'" in done.stderr
    assert "needs a ref" in done.stderr


def namespace_with_qlen(qlen, command):
    """Run a shell command in a private network namespace whose max_dgram_qlen is ``qlen``."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow a private network namespace (unshare -n)")
    script = f"echo {qlen} > /proc/sys/net/unix/max_dgram_qlen && exec {command}"
    return subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform != "linux", reason="net.unix.max_dgram_qlen is a Linux sysctl")
def test_the_same_tables_hold_at_the_systemd_queue_length_of_512(tmp_path):
    """As on systemd hosts: the answers move, the formulas follow them."""
    out = tmp_path / "r512.json"
    done = namespace_with_qlen(512, f"{sys.executable} -m ipcmatrix.cli run -n 2 -k seed -k dgram "
                                    f"--json {out}")
    data = report.read(out)
    assert data["platform"]["tunables"]["net.unix.max_dgram_qlen"] == 512
    assert done.returncode == 0, done.stdout[-3000:]
    observed = {k: r.get("value") for k, r in data["observations"].items()}
    assert observed["seed.flood.deadlock_threshold"] == 2 * observed["dgram.queue.capacity_unconnected"] + 2
    assert observed["dgram.queue.capacity_unconnected"] < 513   # sndbuf-bound, not qlen-bound


def test_a_report_file_gets_the_mode_any_file_of_this_user_gets(tmp_path):
    """Not mkstemp's 0600: a CI job's report is read by other steps and users, as the pages are."""
    mask = platform.current_umask()
    path = report.write({"schema": "x"}, tmp_path / "r.json")
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_a_run_that_replaces_the_default_report_says_so(tmp_path):
    def run():
        return subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "run", "-k", "socketpair"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    first, second = run(), run()
    assert "replaced the report" not in first.stderr
    assert "replaced the report of the run started" in second.stderr and "--json" in second.stderr
