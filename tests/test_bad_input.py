"""Every bad input people give the command line gets one clear message and a non-zero exit,
never a traceback: the file and line of a bad table, the value that is wrong, the resource
that ran out, with the fix."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipcmatrix import catalogue, cli, expectations, report, resources
from sample_reports import make, record, save


def ipcmatrix(*argv, timeout=300, **options):
    return subprocess.run([sys.executable, "-m", "ipcmatrix.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, **options)


def assert_one_clear_message(done, *words, status=None):
    everything = done.stdout + done.stderr
    assert done.returncode != 0, everything
    if status is not None:
        assert done.returncode == status, everything
    assert "Traceback" not in everything and "INTERNALERROR" not in everything, everything
    for word in words:
        assert word in everything, everything


@pytest.fixture
def tables(tmp_path):
    """A copy of the kit's tables to break."""
    copy = tmp_path / "tables"
    shutil.copytree(expectations.TABLES_DIR, copy)
    return copy


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return 1 + text[:text.index(old)].count("\n")   # the line the edit is on


# --- arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "two"])
def test_a_timeout_multiplier_that_scales_nothing_is_refused(value):
    done = ipcmatrix("run", f"--timeout-multiplier={value}")
    assert_one_clear_message(done, "--timeout-multiplier", "finite number above 0", status=2)


def test_a_missing_tables_directory_is_named_not_taken_for_an_unknown_platform(tmp_path):
    missing = tmp_path / "nonexistent"
    for argv in (["run", "--tables", str(missing)], ["check", str(missing)],
                 ["explain", "dgram.oversize", "--tables", str(missing)]):
        done = ipcmatrix(*argv)
        assert_one_clear_message(done, f"{missing} does not exist", status=2)
        assert "bless" not in done.stderr


def test_an_unknown_family_is_named_with_the_likeliest_one():
    for argv in (["list", "dgrm"], ["run", "-k", "dgrm"], ["probe", "dgrm"]):
        assert_one_clear_message(ipcmatrix(*argv), "unknown probe family 'dgrm'",
                                 "did you mean dgram?", status=2)


def test_pytest_options_before_the_double_dash_get_the_hint():
    done = ipcmatrix("run", "--junitxml=x.xml")
    assert_one_clear_message(done, "unrecognized arguments: --junitxml=x.xml",
                             "ipcmatrix run -- --junitxml=x.xml", status=2)


def test_run_help_names_the_real_default_report_path():
    done = ipcmatrix("run", "--help")
    assert "reports/<platform>-<release>-<machine>.json" in " ".join(done.stdout.split())


# --- tables ------------------------------------------------------------------------------------

def test_a_broken_table_under_the_default_parallel_run_gives_its_file_and_line(tables):
    line = edit(tables / "linux.toml", 'expect = "EMSGSIZE"', 'expect = "EMSGSIZE"\nmachine = 3')
    done = ipcmatrix("run", "--tables", str(tables), "--json", str(tables / "r.json"))
    assert_one_clear_message(done, f"linux.toml:{line + 1}", status=1)
    assert not (tables / "r.json").exists()


@pytest.mark.parametrize("old, new, says", [
    ("max_dgram_qlen + 1", "maxx_dgram_qlen + 1", "'maxx_dgram_qlen'"),
    ("2 * dgram.queue.capacity_unconnected + 2", "2 * dgram.queue.capacity_unconected + 2",
     "did you mean dgram.queue.capacity_unconnected?"),
    ('expect = "EMSGSIZE"', 'expect = "EMSGSZE"', "EMSGSZE is not an errno name (did you mean EMSGSIZE?)"),
    ("2 * dgram.queue.capacity_unconnected + 2", "ceil(1e308*10)", "fails when worked out"),
    ("min(max_dgram_qlen + 1, ceil(dgram.sndbuf_default / dgram.truesize_small))", "min()",
     "min() takes at least 2 arguments, not 0"),
    ('expect = "EMSGSIZE"', 'expect = "EMSGSIZE"\nrelease = ">= 6 <7"', 'release condition ">= 6 <7"'),
    ('system = "Linux"', 'system = "Linux"\nrelease = "six"', 'release condition "six"'),
])
def test_check_finds_what_would_break_a_run_with_its_file_and_line(tables, old, new, says):
    line = edit(tables / "linux.toml", old, new) + new.count("\n")
    done = ipcmatrix("check", str(tables))
    assert_one_clear_message(done, says, status=1)
    assert f"linux.toml:{line}:" in done.stderr.split(says)[0].splitlines()[-1]


def test_the_kits_own_tables_pass_the_check():
    done = ipcmatrix("check")
    assert done.returncode == 0, done.stderr


def test_a_formula_that_fails_when_worked_out_is_an_error_verdict_not_a_crash():
    from ipcmatrix import rules, verdict
    entry = {"formula": "ceil(x * 1e308 * 10)", "ref": "r", "evidence": "source"}
    judged = verdict.judge("k.k", {"value": 1}, entry, {"x": 10}, "k")
    assert judged["verdict"] == "error" and "ceil(inf) fails" in judged["error"]
    with pytest.raises(rules.FormulaError, match="division by zero"):
        rules.evaluate("1 // x", {"x": 0})


# --- outputs ---------------------------------------------------------------------------------

def test_unwritable_outputs_are_named(tmp_path):
    report = save(tmp_path, "r.json", make({"dgram.oversize": record("EMSGSIZE")}))
    nowhere = tmp_path / "no" / "such" / "dir"
    for argv in (["report", str(report), "--html", str(nowhere / "r.html")],
                 ["compare", str(report), str(report), "--md", str(nowhere / "m.md")]):
        assert_one_clear_message(ipcmatrix(*argv), f"cannot write {nowhere}", status=2)


def test_bless_into_a_tables_directory_that_does_not_exist_is_refused(tmp_path):
    report = save(tmp_path, "r.json", make({"dgram.oversize": record("EMSGSIZE")}))
    done = ipcmatrix("bless", str(report), "--platform", "new", "--tables", str(tmp_path / "newdir"))
    assert_one_clear_message(done, "newdir does not exist", status=2)


def test_a_reader_that_goes_away_is_no_traceback():
    read, write = os.pipe()
    os.close(read)          # like `ipcmatrix probe socketpair | head -1` after head exits
    try:
        done = subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "probe", "socketpair"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""


# --- untrusted reports ---------------------------------------------------------------------------

def test_a_hand_edited_verdict_is_judged_again(tmp_path, capsys):
    data = make({"dgram.oversize": record(5, expected=0, rule="expect: 0")})
    path = save(tmp_path, "r.json", data)
    assert cli.main(["report", str(path)]) == 0
    captured = capsys.readouterr()
    assert "the report says match, but its value 5 against expected 0" in captured.err
    assert "mismatch" in captured.out


def test_bless_says_when_a_report_is_from_another_kit_version_and_escapes_what_it_echoes(tmp_path, capsys):
    data = make({"dgram.oversize": record("EMSGSIZE")}, version="0.0.9")
    data["platform"]["system"] = "Evil\x1b]0;pwned\x07OS"
    path = save(tmp_path, "r.json", data)
    status = cli.main(["bless", str(path), "--dry-run"])
    captured = capsys.readouterr()
    assert status == 1
    assert "written by ipcmatrix 0.0.9" in captured.err
    assert "\x1b" not in captured.err + captured.out and "\\u001b" in captured.err


def test_values_are_shown_as_json_not_python(tmp_path):
    data = make({"dgram.truncation.rest_discarded": record(True, verdict="mismatch", expected=None,
                                                           rule="expect: null")})
    data["observations"]["dgram.truncation.rest_discarded"]["expected"] = None
    path = save(tmp_path, "r.json", data)
    out = ipcmatrix("explain", "dgram.truncation.rest_discarded", "--report", str(path)).stdout
    assert "true" in out and "True" not in out and "None" not in out
    assert "expect: true" in out or "expect: false" in out


# --- resources -----------------------------------------------------------------------------------

def limited(limit, *argv, **options):
    command = " ".join([f"ulimit {limit} &&", sys.executable, "-m", "ipcmatrix.cli", *argv])
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, **options)


def test_too_few_open_files_is_named(tmp_path):
    # Too few to start twenty probes side by side: measured one at a time, and the one
    # family that needs more than 40 (speed's transports) says which limit it hit.
    done = limited("-n 40", "run", "--json", str(tmp_path / "r.json"))
    assert_one_clear_message(done, "ran out of open files", "ulimit -n = 40")
    errors = {k for k, r in report.read(tmp_path / "r.json")["observations"].items()
              if r["verdict"] == "error"}
    assert errors and all(key.startswith("speed.") for key in errors), errors


def test_too_few_open_files_for_even_one_probe_stop_the_run_before_it_starts(tmp_path):
    done = limited("-n 12", "run", "--json", str(tmp_path / "r.json"))
    assert_one_clear_message(done, "one probe at a time", "ulimit -n = 12", status=3)
    assert not (tmp_path / "r.json").exists()


def test_open_files_enough_for_one_probe_at_a_time_are_enough_for_a_run(tmp_path):
    done = limited("-n 64", "run", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_too_little_memory_is_named(tmp_path):
    # Under a tight limit the run starts no threads and no pytest, and measures one family
    # at a time: it fits in about 32 MiB of address space; at 24000 KiB it never starts.
    done = limited("-v 24000", "run", "--json", str(tmp_path / "r.json"))
    assert_one_clear_message(done, "ran out of memory", "ulimit -v = 24000 KiB")


def test_a_tight_memory_limit_still_measures_every_key(tmp_path):
    done = limited("-v 40000", "run", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = report.read(tmp_path / "r.json")
    assert data["complete"] and len(data["observations"]) == len(catalogue.catalogue())


def test_the_issues_memory_limit_is_room_enough_for_a_whole_run(tmp_path):
    done = limited("-v 500000", "run", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_too_few_processes_is_named():
    # Root is exempt from RLIMIT_NPROC (kernel/fork.c copy_process), so `ulimit -u 16` is
    # worded from the error it causes, as every command would see it.
    words = resources.ran_out(BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
    assert words.startswith("ran out of processes for this user") and "ulimit -u" in words


# Run inside `unshare -m`: the real /tmp is kept at /mnt (in this namespace only), a 64 KiB
# tmpfs goes over /tmp, what the run needs from the real /tmp (this Python, the checkout,
# the test's own directory may all live there) is bound back in, and the rest is filled.
SMALL_TMP = """
import os, subprocess, sys
needed, command = sys.argv[1].split(":"), sys.argv[2:]
run = lambda *argv: subprocess.run(argv, check=True)
run("mount", "--make-rprivate", "/")
run("mount", "--bind", "/tmp", "/mnt")
run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", "/tmp")
for name in filter(None, needed):
    os.mkdir("/tmp/" + name)
    run("mount", "--bind", "/mnt/" + name, "/tmp/" + name)
with open("/tmp/fill", "wb") as fill:
    try:
        fill.write(bytes(60 << 10))
    except OSError:
        pass
os.execvp(command[0], command)
"""


def under_tmp(*paths):
    """The first component under /tmp of each path that lies there (it must be bound back)."""
    found = set()
    for path in paths:
        parts = Path(os.path.realpath(path)).parts
        if parts[:2] == ("/", "tmp") and len(parts) > 2:
            found.add(parts[2])
    return sorted(found)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0 or not os.path.isdir("/mnt"),
                    reason="needs root, unshare(1) and /mnt for a private mount namespace")
def test_a_full_tmp_is_named_before_the_run_starts(tmp_path):
    import ipcmatrix
    needed = under_tmp(sys.prefix, sys.executable, ipcmatrix.__file__, tmp_path)
    done = subprocess.run(["unshare", "-m", sys.executable, "-I", "-c", SMALL_TMP, ":".join(needed),
                           sys.executable, "-m", "ipcmatrix.cli", "run", "-n", "0", "-k", "dgram",
                           "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300)
    if "unshare:" in done.stderr or "mount:" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()[-300:]}")
    assert_one_clear_message(done, "ran out of disk space in /tmp", "ENOSPC")
