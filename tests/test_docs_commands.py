"""The README's and the docs' commands, read out of the files and run as written, so they stay
true: the README's set-up from a copy of the checkout under a 0700 directory, with only the
Python on PATH; every `ipcmatrix ...` line of a shell block parsed by the real command line;
and the CI guide's run and compare, run in a scratch directory."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ipcmatrix import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the command lines cannot stand for here (a placeholder repository, another OS's report).
NOT_RUNNABLE = re.compile(r"OWNER|my-illumos|my-mac|\$\(hostname\)|\.\.\.|…")


def shell_blocks(path):
    """The ```sh blocks of a Markdown file, each as its lines (comments kept)."""
    return [block.splitlines() for block in
            re.findall(r"^```sh\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.M | re.S)]


def commands(path):
    """Each command line of the file's shell blocks, its trailing comment removed."""
    found = []
    for block in shell_blocks(path):
        for line in block:
            words = shlex.split(line, comments=True)
            if words:
                found.append((line, words))
    return found


def readme_setup():
    """The README's two set-up commands: (the main job, the kit's own tests)."""
    lines = [line for line in shell_blocks(ROOT / "README.md")[0] if line and not line.startswith("#")]
    assert len(lines) == 2, lines
    return lines


def ipcmatrix_argv(words):
    """The ipcmatrix arguments of a command line (``.venv/bin/ipcmatrix run ...``), or None."""
    for i, word in enumerate(words):
        if word == "&&":
            return ipcmatrix_argv(words[i + 1:])
    if words and Path(words[0]).name == "ipcmatrix":
        return words[1:]
    return None


def test_every_ipcmatrix_command_in_the_docs_is_one_the_command_line_accepts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gvisor-tables").mkdir()      # made by the step before it in the guide
    checked = 0
    for path in DOCS:
        for line, words in commands(path):
            argv = ipcmatrix_argv(words)
            if argv is None:
                continue
            argv = [a.replace("$NAME", "linux-x86_64") for a in argv]
            try:
                cli.parse(argv)
            except SystemExit as exc:
                pytest.fail(f"{path.name}: `{line.strip()}` is refused (exit {exc.code})")
            checked += 1
    assert checked >= 10


def test_the_readme_names_the_venv_commands_ci_runs():
    run = (ROOT / ".ci" / "run").read_text()
    main_job, own_tests = readme_setup()
    assert main_job.startswith("python3 -m venv .venv && ")
    for step in own_tests.split(" && ")[1:]:
        assert step.replace('".[test]"', "") in run.replace('".[test]"', ""), step


def copy_of_the_checkout(parent):
    """The checkout's files (as a clone has them) under ``parent``."""
    target = parent / "kit"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_the_readmes_first_command_works_as_written_from_a_0700_directory():
    main_job, _ = readme_setup()
    with tempfile.TemporaryDirectory(prefix="ipcm-readme-") as scratch:   # mkdtemp: 0700
        assert os.stat(scratch).st_mode & 0o777 == 0o700
        kit = copy_of_the_checkout(Path(scratch))
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        done = subprocess.run(["bash", "-c", main_job], cwd=kit, capture_output=True, text=True,
                              timeout=540, env=environment)
        output = done.stdout + done.stderr
        if done.returncode != 0 and re.search(r"No matching distribution|Could not fetch|"
                                              r"NewConnectionError|Temporary failure in name", output):
            pytest.skip(f"no package index reachable: {output[-300:]}")
        assert done.returncode in (0, 1), output[-3000:]      # 1: a key differs on this machine
        assert "report written to" in output and "INTERNALERROR" not in output
        site = list((kit / ".venv" / "lib").glob("python3*/site-packages"))[0]
        top_level = {p.name for p in site.iterdir()}
        assert "probes" not in top_level and "suites" not in top_level
        probe = subprocess.run([str(kit / ".venv" / "bin" / "python"), "-m", "probes.dgram"],
                               cwd=kit, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0 and '"dgram.oversize"' in probe.stdout, probe.stderr


def test_the_ci_guides_run_and_compare_work_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(sys.prefix)          # the guide's venv: this one
    lines = [line for line, words in commands(ROOT / "docs" / "ci.md")
             if not NOT_RUNNABLE.search(line)]
    assert any("ipcmatrix run" in line for line in lines) and any("NAME=" in line for line in lines)
    script = "set -e\n" + "\n".join(lines) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=540)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "reports" / "linux-x86_64.json").is_file()
    if done.returncode == 0:
        assert (tmp_path / "matrix.md").is_file() and (tmp_path / "matrix.html").is_file()


def test_the_readmes_probe_and_suite_commands_work_in_this_checkout(tmp_path):
    text = (ROOT / "README.md").read_text()
    probe = re.search(r"`\.venv/bin/python (-m probes\.\w+)` in a checkout", text).group(1)
    done = subprocess.run([sys.executable, *probe.split()], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and '"observations"' in done.stdout, done.stderr
    suites = re.search(r"`\.venv/bin/python (-m pytest suites [^`]+)` works too", text).group(1)
    argv = [a.replace("r.json", str(tmp_path / "r.json")) for a in suites.split()]
    argv = [a if a != "auto" else "2" for a in argv] + ["-k", "dgram", "-p", "no:cacheprovider"]
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode in (0, 1) and (tmp_path / "r.json").is_file(), done.stdout[-2000:]
