"""`ipcmatrix compare`: one row per key, one column per run; a row differs exactly when the
runs that measured the key got different results, and each differing row says why."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipcmatrix import catalogue, cli, compare, expectations, matrix, render_markdown, report, view
from sample_reports import MACOS, linux_run, live_markup, make, record, save

REPO = Path(__file__).resolve().parent.parent


def build(*reports):
    return compare.matrix([(f"r{i}.json", r) for i, r in enumerate(reports, start=1)])


def differing(m):
    return {r.key for r in m.differing}


def test_only_the_keys_whose_results_differ_are_different():
    m = build(linux_run(10), linux_run(512))
    assert differing(m) == {"dgram.queue.capacity_unconnected"}
    row = next(r for r in m.rows if r.key == "dgram.queue.capacity_unconnected")
    assert [c.text for c in row.cells] == ["11", "278"]


def test_errors_timeouts_and_unsupported_are_results_of_their_own():
    m = build(linux_run(10, **{
        "dgram.truncation.received": record(error="boom", verdict="error"),
        "dgram.max_size": record(error="timeout: killed after 20 s", verdict="timeout")}),
        linux_run(10, **{"dgram.truncation.received": record(error="other words", verdict="error"),
                         "dgram.max_size": record("unsupported", verdict="mismatch", expected=212960)}))
    cells = {r.key: [c.kind for c in r.cells] for r in m.rows}
    assert cells["dgram.truncation.received"] == ["error", "error"]   # same failure: not a difference
    assert cells["dgram.max_size"] == ["timeout", "unsupported"]
    assert differing(m) == {"dgram.max_size"}


def test_true_is_not_1_and_a_missing_key_is_not_a_difference():
    one = linux_run(10, **{"dgram.truncation.rest_discarded": record(True)})
    other = linux_run(10, **{"dgram.truncation.rest_discarded": record(1)})
    del other["observations"]["dgram.full.blocking_send"]
    m = build(one, other)
    assert differing(m) == {"dgram.truncation.rest_discarded"}
    missing = next(r for r in m.rows if r.key == "dgram.full.blocking_send")
    assert [c.kind for c in missing.cells] == ["value", "missing"] and not missing.differs
    assert "1 keys measured by only some runs are shown but not compared" in m.headline()


def test_a_differing_row_has_a_numbered_note_with_the_tunable_rule_and_ref():
    m = build(linux_run(10), linux_run(512))
    (note,) = m.notes
    assert note.number == 1 and note.key == "dgram.queue.capacity_unconnected"
    text = "\n".join(note.lines)
    assert "depends on net.unix.max_dgram_qlen, which differs: 10 in run 1, 512 in run 2" in text
    assert "formula: 'min(max_dgram_qlen + 1" in text and "ref: af_unix.c" in text


def test_columns_are_labelled_by_platform_release_machine_and_what_tells_them_apart():
    m = build(linux_run(10), linux_run(512), make({"dgram.max_size": record(2048)}, platform=MACOS))
    assert [c.label for c in m.columns] == ["linux 6.1.0 x86_64 max_dgram_qlen=10",
                                            "linux 6.1.0 x86_64 max_dgram_qlen=512",
                                            "macos 26.0 arm64"]
    assert m.columns[2].evidence == {"observed": 1, "reported": 0, "source": 0}


def test_reports_from_different_kit_versions_are_compared_with_a_warning(tmp_path, capsys):
    newer = linux_run(512)
    newer["kit"]["version"] = "0.2.0"
    paths = [save(tmp_path, "a.json", linux_run(10)), save(tmp_path, "b.json", newer)]
    assert cli.main(["compare", *map(str, paths)]) == 0
    out, err = capsys.readouterr()
    assert "different ipcmatrix versions (0.1.0 in run 1, 0.2.0 in run 2)" in err
    assert "> [!WARNING]" in out and "different ipcmatrix versions" in out


def markdown_keys(text):
    """The keys of the matrix's rows (the family tables come after the runs table)."""
    families = text.split("\n## ", 1)[1].split("\n## Notes", 1)[0]
    return re.findall(r"^\| (?:\*\*)?`([^`]+)`", families, flags=re.M)


def test_markdown_filter_shows_only_differing_keys_with_their_notes(tmp_path, capsys):
    paths = [save(tmp_path, "a.json", linux_run(10)), save(tmp_path, "b.json", linux_run(512))]
    assert cli.main(["compare", "--different", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert markdown_keys(out) == ["dgram.queue.capacity_unconnected"]
    assert "| **`dgram.queue.capacity_unconnected`** <sup>1</sup> | ✅ `11` | ✅ **`278`** |" in out
    assert "## Notes" in out and "1. `dgram.queue.capacity_unconnected`" in out
    assert cli.main(["compare", *map(str, paths)]) == 0
    assert markdown_keys(capsys.readouterr().out) == sorted(linux_run(10)["observations"])


def test_hostile_keys_and_values_do_not_break_the_matrix():
    evil = '<script>alert(1)</script>|`x`\nnext'
    m = build(linux_run(10, **{"dgram.full.blocking_send": record(evil)}), linux_run(10))
    text = render_markdown.matrix(m)
    row = next(line for line in text.splitlines() if "dgram.full.blocking_send" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 4     # three cells, whatever the value
    assert set(live_markup(row)) <= {"*"}               # the value stays inside its code span
    assert "<script>alert(1)</script>" in row and "\nnext" not in text


def test_cells_carry_their_own_verdict_and_the_grid_counts_each_family():
    q512 = linux_run(512, **{"dgram.max_size": record(5, verdict="mismatch", expected=212960),
                             "dgram.truesize_small": record(error="boom", verdict="error",
                                                            rule="range: [256, 4096]")})
    m = build(linux_run(10), q512)
    cells = {r.key: r.cells for r in m.rows}
    assert [c.verdict for c in cells["dgram.max_size"]] == ["match", "mismatch"]
    assert cells["dgram.max_size"][1].expected == "212960"
    assert cells["dgram.truesize_small"][1].expected == "range: [256, 4096]"   # the rule, on an error
    assert [r.key for r in m.with_problems] == ["dgram.max_size", "dgram.truesize_small"]
    (tallies,) = m.grid.values()
    assert [t.text() for t in tallies] == ["7/7", "5/7"]
    assert [t.worst for t in tallies] == ["match", "mismatch"]
    assert tallies[1].breakdown() == "1 mismatch, 1 error, 5 match"
    text = render_markdown.matrix(m)
    assert "| [dgram](#dgram) | ✅ 7/7 | ❌ 5/7 |" in text
    assert "❌ **`5`** (expected `212960`)" in text and "⚠️ **error: boom** (expected `range: [256, 4096]`)" in text
    assert text.index("| [dgram](#dgram) | ✅ 7/7") < text.index("| platform |") < text.index("## dgram")


def test_the_expected_behaviour_matrix_shows_every_key_and_platform_from_the_tables():
    known = catalogue.catalogue()
    em = matrix.build(expectations.load_all(), known)
    assert [c.name for c in em.columns][:3] == ["linux", "macos", "freebsd"]
    assert {r.key for r in em.rows} >= set(known)
    row = next(r for r in em.rows if r.key == "dgram.full.blocking_send")
    linux, macos = row.cells[0], row.cells[1]
    assert row.differs and linux[0].rule == view.show("blocks") and linux[0].evidence == "observed"
    assert macos[0].rule == view.show("ENOBUFS") and macos[0].evidence in ("source", "reported")
    macos_column = em.columns[1]
    assert "release >=14, machine arm64" in macos_column.conditions
    varied = [r for r in em.rows if any(v.when for v in r.cells[1])]
    assert varied and all(not r.cells[1][0].when for r in varied)   # every release's entry first
    same = next(r for r in em.rows if r.key == "dgram.oversize")
    assert not same.differs


def test_the_expected_matrix_shows_rules_as_json_conditions_and_reported_links(tmp_path, capsys):
    (tmp_path / "a.toml").write_text(
        '[platform]\nname = "alpha"\nsystem = "Alpha"\n\n'
        '["dgram.full.blocking_send"]\nexpect = "blocks"\nref = "r"\nevidence = "observed"\n\n'
        '["dgram.max_size"]\nformula = "dgram.sndbuf_default - 32"\nref = "r"\nevidence = "source"\n')
    (tmp_path / "b.toml").write_text(
        '[platform]\nname = "beta"\nsystem = "Beta"\n\n'
        '[["dgram.full.blocking_send"]]\none_of = ["ENOBUFS", "EAGAIN"]\nref = "r"\nevidence = "source"\n\n'
        '[["dgram.full.blocking_send"]]\nexpect = true\nrelease = ">=14"\nmachine = "arm64"\n'
        'ref = "r"\nevidence = "source"\n')
    tables = expectations.load_all(tmp_path)
    em = matrix.build(tables)
    cells = {r.key: r.cells for r in em.rows}
    assert [v.rule for v in cells["dgram.full.blocking_send"][1]] == [
        f"one of {view.show('ENOBUFS')}, {view.show('EAGAIN')}", "true"]
    assert cells["dgram.full.blocking_send"][1][1].when == "release >=14, machine arm64"
    assert cells["dgram.max_size"] == [[matrix.Variant(rule="= dgram.sndbuf_default - 32",
                                                       evidence="source", ref="r")], []]
    # reported_by (the evidence kind another branch adds) is shown as links when present
    tables[0].entries["dgram.max_size"][0].update(
        evidence="reported", reported_on="Alpha 2",
        reported_by=["python/cpython#1", {"link": "javascript:x()", "on": "Alpha 3"}])
    text = render_markdown.expected_matrix(matrix.build(tables))
    assert ("*(reported)* reported by [python/cpython\\#1](<https://github.com/python/cpython/issues/1>)"
            " on Alpha 2, `javascript:x()` on Alpha 3") in text
    assert cli.main(["matrix", "--tables", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"| **`dgram.full.blocking_send`** | {render_markdown.code(view.show('blocks'))} *(observed)* |" in out
    assert "`release >=14, machine arm64`: `true` *(source)*" in out


def test_the_matrix_command_names_a_bad_table(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("[platform]\nsystem = 'X'\n[\"dgram.max_size\"]\nexpect = 1\n")
    assert cli.main(["matrix", "--tables", str(tmp_path)]) == 2
    assert f"{tmp_path / 'bad.toml'}:3" in capsys.readouterr().err


def run_in_namespace(qlen, path):
    """A seed+dgram run in a private network namespace with this max_dgram_qlen."""
    script = (f"echo {qlen} > /proc/sys/net/unix/max_dgram_qlen && exec {sys.executable} -m "
              f"ipcmatrix.cli run -n 0 -k seed -k dgram --json {path}")
    return subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "GITHUB_STEP_SUMMARY": ""})


def namespaces_available():
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    done = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return "" if done.returncode == 0 else "cannot create a network namespace (needs root)"


def test_two_real_runs_differ_exactly_where_max_dgram_qlen_matters(tmp_path):
    reason = namespaces_available()
    if reason:
        pytest.skip(reason)
    paths = [tmp_path / "q10.json", tmp_path / "q512.json"]
    for qlen, path in zip((10, 512), paths):
        run_in_namespace(qlen, path)
    m = compare.matrix([(str(p), report.read(p)) for p in paths])
    # The queue capacity, the flood's threshold that follows it, and whether poll can see
    # the limit (only its own send buffer, at 512) move with the tunable; nothing else does.
    moved = {"dgram.queue.capacity_unconnected", "seed.flood.deadlock_threshold",
             "dgram.full.poll_writable_unconnected"}
    assert differing(m) == moved
    assert [c.text for c in next(r for r in m.rows if r.key == "dgram.queue.capacity_unconnected").cells][0] == "11"
    assert m.tunables == [("net.unix.max_dgram_qlen", ["10", "512"])]
    done = subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "compare", "--different",
                           *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert sorted(markdown_keys(done.stdout)) == sorted(moved)
