"""`ipcmatrix run` without pytest: the same verdicts, statuses and report as the suites give."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipcmatrix import cli, direct, report

REPO = Path(__file__).resolve().parent.parent
TABLES = REPO / "ipcmatrix" / "tables"


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "run", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tables_with_one_wrong(tmp_path):
    """The shipped tables, with one creds expectation the platform will not meet."""
    tables = tmp_path / "tables"
    tables.mkdir()
    for table in TABLES.glob("*.toml"):
        (tables / table.name).write_text(table.read_text())
    linux = tables / "linux.toml"
    text = linux.read_text()
    wrong = text.replace('["creds.peer.uid_matches"]\nexpect = true',
                         '["creds.peer.uid_matches"]\nexpect = false')
    assert wrong != text
    linux.write_text(wrong)
    return tables


@pytest.mark.skipif(sys.platform != "linux", reason="edits the Linux table")
def test_the_default_run_and_the_suites_agree_on_a_mismatch(tables_with_one_wrong, tmp_path):
    direct_json, suites_json = tmp_path / "direct.json", tmp_path / "suites.json"
    by_kit = run("-k", "creds", "--tables", tables_with_one_wrong, "--json", direct_json, cwd=tmp_path)
    by_pytest = run("-k", "creds", "--tables", tables_with_one_wrong, "--json", suites_json, "--", "-q",
                    cwd=tmp_path)
    assert by_kit.returncode == by_pytest.returncode == 1, by_kit.stdout + by_pytest.stdout
    verdicts = [{k: r["verdict"] for k, r in report.read(p)["observations"].items()}
                for p in (direct_json, suites_json)]
    assert verdicts[0] == verdicts[1]
    assert verdicts[0]["creds.peer.uid_matches"] == "mismatch"
    # What pytest prints for the failing test, the kit prints too: key, observed, expected, ref.
    for line in ("creds.peer.uid_matches: mismatch", "observed: true", "expected: false"):
        assert line in by_kit.stdout and line in by_pytest.stdout
    assert "FAILED creds.peer.uid_matches" in by_kit.stdout
    assert "MISMATCH  creds.peer.uid_matches" in by_kit.stdout
    assert "import pytest" not in by_kit.stderr


def test_the_default_run_never_imports_pytest(tmp_path):
    """The point of the direct path: pytest's start is CPU the probes need."""
    script = ("import sys; from ipcmatrix import cli; status = cli.main(['run', '-k', 'socketpair', "
              f"'--json', {str(tmp_path / 'r.json')!r}]); "
              "print('PYTEST', 'pytest' in sys.modules, '_pytest' in sys.modules); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PYTEST False False" in done.stdout
    assert report.read(tmp_path / "r.json")["complete"] is True
    assert "passed in" in done.stdout and "socketpair  ......" in done.stdout


def test_a_key_without_an_entry_is_skipped_with_the_reason(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    for table in TABLES.glob("*.toml"):
        text = table.read_text()
        start = text.find('["socketpair.inet"]')
        if start >= 0:
            end = text.find("\n[", start + 1)
            text = text[:start] + text[end + 1:]
        (tables / table.name).write_text(text)
    done = run("-k", "socketpair", "--tables", tables, "--json", tmp_path / "r.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "socketpair  ...s..\n" in done.stdout   # a mark a key, in the catalogue's order
    assert "SKIPPED socketpair.inet = " in done.stdout and "has no entry for socketpair.inet" in done.stdout
    assert "5 passed, 1 skipped" in done.stdout


@pytest.mark.parametrize("workers, extra, expected", [
    ("0", [], False),
    ("2", [], True),
    ("0", ["-n", "2"], True),
    ("0", ["-n2"], True),
    ("0", ["-nauto"], True),
    ("0", ["--numprocesses=auto"], True),
    ("0", ["--junitxml=j.xml"], False),
    ("0", ["-k", "dgram"], False),
])
def test_xdist_is_loaded_only_for_workers(workers, extra, expected):
    args = argparse.Namespace(workers=workers, pytest_args=extra)
    assert cli.wants_workers(args) is expected


@pytest.mark.parametrize("workers, extra, expected", [
    ("0", [], True), ("2", [], False), ("0", ["--junitxml=j.xml"], False), ("0", ["-v"], False),
])
def test_pytest_runs_only_when_the_run_asks_something_of_it(workers, extra, expected):
    assert direct.wanted(argparse.Namespace(workers=workers, pytest_args=extra)) is expected


def test_the_default_run_appends_the_github_step_summary(tmp_path):
    """What the workflow runs (no pytest): the step summary is written as under pytest."""
    summary = tmp_path / "summary.md"
    summary.write_text("written by an earlier step\n")
    done = subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "run", "-k", "socketpair",
                           "--json", str(tmp_path / "r.json")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stdout + done.stderr
    text = summary.read_text()
    assert text.startswith("written by an earlier step\n\n## ipcmatrix report: ")
    assert text.count("## ipcmatrix report") == 1 and "`socketpair.inet`" in text
