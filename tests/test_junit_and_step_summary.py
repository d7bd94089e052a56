"""CI outputs of `ipcmatrix run`: JUnit XML carries each key's observed and expected value,
verdict and ref as properties (also from xdist workers), and on GitHub Actions the run
appends its Markdown report to the step summary."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from ipcmatrix import report

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("ci")
    summary = where / "summary.md"
    summary.write_text("written by an earlier step\n")
    done = subprocess.run(
        [sys.executable, "-m", "ipcmatrix.cli", "run", "-n", "2", "-k", "dgram",
         "--json", str(where / "r.json"), "--", f"--junitxml={where / 'junit.xml'}"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stdout + done.stderr
    return where, report.read(where / "r.json")


def properties(where):
    cases = {}
    for case in ElementTree.parse(where / "junit.xml").iter("testcase"):
        key = case.get("name").split("[", 1)[1].split("]", 1)[0]
        cases[key] = {p.get("name"): p.get("value") for p in case.iter("property")}
    return cases


def test_junit_properties_show_observed_expected_verdict_and_ref(ci_run):
    where, data = ci_run
    cases = properties(where)
    assert set(cases) == set(data["observations"])
    shown = cases["dgram.max_size"]
    record = data["observations"]["dgram.max_size"]
    assert shown["observed"] == str(record["value"]) and shown["expected"] == str(record["expected"])
    assert shown["verdict"] == "match" and shown["ref"] == record["ref"]
    assert shown["rule"] == 'formula: "dgram.sndbuf_default - 32"' and shown["evidence"] == "observed"
    assert cases["dgram.full.blocking_send"]["observed"] == '"blocks"'


def test_the_step_summary_is_appended_after_what_was_there(ci_run):
    where, data = ci_run
    text = (where / "summary.md").read_text()
    assert text.startswith("written by an earlier step\n\n## ipcmatrix report: linux ")
    assert text.count("## ipcmatrix report") == 1
    assert all(f"`{key}`" in text for key in data["observations"])
    assert f"Full report: `{where / 'r.json'}`" in text
