"""`ipcmatrix bless`: record observed values in a platform's table, conservatively, by
editing the TOML text in place; a run on an unknown platform says exactly how."""
import difflib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ipcmatrix import catalogue, cli, expectations, report
from ipcmatrix.expectations import TABLES_DIR
from sample_reports import HOSTILE, MACOS, linux_run, make, record, save

REPO = Path(__file__).resolve().parent.parent


def ipcmatrix(*args, summary=""):
    return subprocess.run([sys.executable, "-m", "ipcmatrix.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})


def test_a_new_platform_blessed_from_a_real_run_then_matches(tmp_path):
    tables, first_report, summary = tmp_path / "tables", tmp_path / "r.json", tmp_path / "summary.md"
    tables.mkdir()
    first = ipcmatrix("run", "-n", "0", "-k", "dgram", "--tables", tables, "--json", first_report,
                      summary=summary)
    assert first.returncode == 0, first.stdout + first.stderr
    name = expectations.suggested_table_name(report.read(first_report)["platform"])
    command = re.search(r"^\s+(ipcmatrix bless .*)$", first.stdout, flags=re.M).group(1)
    assert command == f"ipcmatrix bless {first_report} --tables {tables} --platform {name}"
    assert f"`{command}`" in summary.read_text()
    blessed = ipcmatrix(*shlex.split(command)[1:])        # exactly the printed command
    assert blessed.returncode == 0, blessed.stderr
    (table,) = tables.glob("*.toml")
    keys = {o.key for o in catalogue.observations_of("dgram")}
    assert f"wrote {table}" in blessed.stdout and f"{len(keys)} added" in blessed.stdout
    loaded = expectations.load(table)
    assert set(loaded.entries) == keys
    assert loaded.platform["system"] == "Linux"
    assert loaded.platform["release"] == os.uname().release.split(".")[0]
    assert all(e[0]["evidence"] == "observed" and e[0]["observed_on"] for e in loaded.entries.values())
    rerun = ipcmatrix("run", "-n", "0", "-k", "dgram", "--tables", tables, "--json", tmp_path / "r2.json")
    assert rerun.returncode == 0, rerun.stdout
    again = report.read(tmp_path / "r2.json")
    assert again["table"] == table.name
    assert {r["verdict"] for r in again["observations"].values()} == {"match"}
    assert list(tables.iterdir()) == [table]     # no temporary file left behind


def bless(capsys, *argv):
    status = cli.main(["bless", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_new_macos_release_gets_its_own_table_that_only_it_picks(tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "macos.toml").write_text((TABLES_DIR / "macos.toml").read_text())
    data = make({"dgram.full.blocking_send": record("ENOBUFS", verdict="no-expectation"),
                 "dgram.truncation.recv_with_msg_trunc": record(3, verdict="no-expectation")},
                platform=MACOS)
    status, out, err = bless(capsys, save(tmp_path, "mac.json", data), "--tables", tables,
                             "--platform", "macos-26")
    assert status == 0, err
    new = expectations.load(tables / "macos-26.toml")
    assert new.platform["release"] == "26" and new.platform["system"] == "Darwin"
    old = expectations.load(tables / "macos.toml")
    assert new.platform["probe_deadline_s"] == old.platform["probe_deadline_s"]  # settings carried over
    assert new.entries["dgram.full.blocking_send"] == [{
        "expect": "ENOBUFS",
        "ref": "observed by ipcmatrix bless on 26.0 arm64 (cpython 3.12.4, ipcmatrix 0.1.0); "
               "no source reference yet",
        "evidence": "observed", "observed_on": ["26.0 arm64 (cpython 3.12.4, ipcmatrix 0.1.0)"]}]
    both = [new, old]
    assert expectations.table_for({"system": "Darwin", "release": "26.1"}, both) is new
    assert expectations.table_for({"system": "Darwin", "release": "15.4"}, both) is old
    assert 'added     dgram.full.blocking_send = "ENOBUFS"' in out


def linux_copy(tmp_path, *replacements):
    tables = tmp_path / "tables"
    tables.mkdir()
    text = (TABLES_DIR / "linux.toml").read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tables / "linux.toml").write_text(text)
    return tables / "linux.toml"


def test_an_existing_table_is_edited_in_place_keeping_ref_note_comments_and_order(tmp_path, capsys):
    path = linux_copy(tmp_path,
                      ('["dgram.full.blocking_send"]\nexpect = "blocks"',
                       '["dgram.full.blocking_send"]\nexpect = "ENOBUFS"  # hand-written comment'),
                      ('["dgram.truncation.received"]\nexpect = "ABC"\n'
                       'ref = "af_unix.c __unix_dgram_recvmsg: copies at most size bytes of the skb"\n'
                       'evidence = "observed"',
                       '["dgram.truncation.received"]\nexpect = "ABC"\n'
                       'ref = "af_unix.c __unix_dgram_recvmsg: copies at most size bytes of the skb"\n'
                       'evidence = "source"'))
    before = path.read_text()
    data = linux_run(10)
    data["platform"]["release"] = os.uname().release
    status, out, err = bless(capsys, save(tmp_path, "r.json", data), "--tables", path.parent)
    assert status == 0, err
    after = path.read_text()
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = [line[2:] for line in diff if line.startswith("+ ")]
    assert removed == ['evidence = "source"', 'expect = "ENOBUFS"  # hand-written comment']
    seen = f'observed_on = ["{data["platform"]["release"]} x86_64 (cpython 3.11.7, ipcmatrix 0.1.0)"]'
    assert added == ['evidence = "observed"', seen, 'expect = "blocks"  # hand-written comment', seen]
    assert 'changed   dgram.full.blocking_send: expect: "ENOBUFS" -> "blocks"' in out
    assert "confirmed dgram.truncation.received: evidence source -> observed" in out
    entry = expectations.load(path).entries["dgram.full.blocking_send"][0]
    assert entry["ref"].startswith("af_unix.c unix_wait_for_peer")   # the hand-written ref stays


def refused(capsys, path, *reports):
    before = path.read_bytes()
    status, out, err = bless(capsys, *reports, "--tables", path.parent)
    assert status == 1 and "refused, nothing written" in err
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return err


def test_reports_that_disagree_are_refused_unless_a_rule_explains_both(tmp_path, capsys):
    path = linux_copy(tmp_path)
    runs = [linux_run(10), linux_run(512)]
    for data in runs:
        data["platform"]["release"] = os.uname().release
    paths = [save(tmp_path, "q10.json", runs[0]), save(tmp_path, "q512.json", runs[1])]
    # The Linux formula gives 11 at qlen 10 and 278 at 512: nothing to change.
    status, out, err = bless(capsys, *paths, "--tables", path.parent, "--dry-run")
    assert status == 0 and "0 changed" in out, err
    # A new table has no formula: 11 and 278 for one key is a contradiction.
    status, _, err = bless(capsys, *paths, "--tables", path.parent, "--platform", "linux-new")
    assert status == 1
    assert ("dgram.queue.capacity_unconnected: the reports disagree: 11 in "
            f"{paths[0]}, 278 in {paths[1]}") in err
    assert not (path.parent / "linux-new.toml").exists()


def test_a_value_a_formula_does_not_give_is_refused_not_overwritten(tmp_path, capsys):
    path = linux_copy(tmp_path, ('formula = "dgram.sndbuf_default - 32"',
                                 'formula = "dgram.sndbuf_default - 33"'))
    data = linux_run(10, **{"dgram.sndbuf_default": record(212992)})
    data["platform"]["release"] = os.uname().release
    err = refused(capsys, path, save(tmp_path, "r.json", data))
    assert 'dgram.max_size: observed 212960, which its rule (formula: "dgram.sndbuf_default - 33"' in err
    assert "edit it by hand" in err


def test_hostile_values_are_written_as_toml_strings_never_as_toml(tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    evil = HOSTILE + '"\n[platform]\nsystem = "Evil"\n["dgram.max_size"]\nexpect = 1\n\\u0000'
    data = make({"dgram.truncation.received": record(evil, verdict="no-expectation"),
                 "dgram.max_size": record(["a\"]\n[x", [1, "\x00"]], verdict="no-expectation")},
                platform={**MACOS, "python": 'cpython"]\n[platform]\nname = "x'})
    status, _, err = bless(capsys, save(tmp_path, "r.json", data), "--tables", tables,
                           "--platform", "evil")
    assert status == 0, err
    table = expectations.load(tables / "evil.toml")
    assert table.platform["system"] == "Darwin" and table.platform["name"] == "evil"
    assert table.entries["dgram.truncation.received"][0]["expect"] == evil
    assert table.entries["dgram.max_size"][0]["expect"] == ["a\"]\n[x", [1, "\x00"]]


def test_values_toml_cannot_hold_and_bad_names_are_refused(tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    data = save(tmp_path, "r.json", make({"dgram.max_size": record([1, None], verdict="no-expectation"),
                                          "dgram.oversize": record({"a": 1}, verdict="no-expectation")},
                                         platform=MACOS))
    status, _, err = bless(capsys, data, "--tables", tables, "--platform", "macos-26")
    assert status == 1 and "cannot be written to TOML (null inside a list or table)" in err
    assert "dgram.oversize: {\"a\": 1} cannot be written to TOML (an expect rule takes no JSON object)" in err
    status, _, err = bless(capsys, data, "--tables", tables, "--platform", "../escape")
    assert status == 1 and "is not a table name" in err
    mixed = [save(tmp_path, "l.json", linux_run(10)), data]
    status, _, err = bless(capsys, *mixed, "--tables", tables, "--platform", "x")
    assert status == 1 and "different systems" in err
    assert list(tables.iterdir()) == []


def test_without_platform_an_undescribed_platform_is_told_the_name_to_use(tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    status, _, err = bless(capsys, save(tmp_path, "r.json", make({}, platform=MACOS)), "--tables", tables)
    assert status == 1 and "--platform macos-26" in err
