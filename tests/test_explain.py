"""`ipcmatrix explain KEY`: the claim, the course notes' claim, each platform's expectation
with ref and evidence, and what a report observed; an unknown key gets close matches."""
from ipcmatrix import catalogue, cli, expectations, explain
from sample_reports import HOSTILE, linux_run, record, save

KEY = "dgram.full.blocking_send"


def run(capsys, *argv):
    status = cli.main(["explain", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_it_states_the_claim_and_every_tables_expectation_with_ref_and_evidence(capsys):
    status, out, _ = run(capsys, KEY)
    assert status == 0
    assert catalogue.catalogue()[KEY].claim in out
    tables = expectations.load_all()
    assert len(tables) >= 3
    for table in tables:
        entry = table.entry_for(KEY, "99", "x86_64") or table.entries[KEY][0]
        assert f"  {table.name} ({table.platform['system']}" in out
        assert str(entry["ref"]) in out and f"[{entry['evidence']}]" in out
        assert f"{table.path}:{table.lines[(KEY, 0, None)]}" in out     # where to edit it


def test_it_quotes_the_course_notes_claim_where_the_key_tests_one(capsys):
    _, out, _ = run(capsys, "seed.flood.outcome")
    assert "Stuck!!!" in out and "mimics pipe (blocks if filled up)" in out
    _, out, _ = run(capsys, "dgram.max_size")
    assert "no claim of the course notes is tested by this key" in out


def test_every_course_note_of_a_measured_family_names_a_declared_key():
    # A claim attached to a misspelt key would never be shown.
    known, families = catalogue.catalogue(), set(catalogue.families())
    for name in explain.COURSE_NOTES:
        if name.split(".")[0] in families:
            assert any(key == name or (name.endswith(".") and key.startswith(name))
                       for key in known), name


def test_with_a_report_it_shows_the_last_observed_value_and_verdict(tmp_path, capsys):
    path = save(tmp_path, "r.json", linux_run(10, **{KEY: record("ENOBUFS", verdict="mismatch",
                                                                 expected="blocks")}))
    _, out, _ = run(capsys, KEY, "--report", str(path))
    observed = out.split("Last observed", 1)[1]
    assert f"({path}: linux 6.1.0 x86_64, table linux.toml)" in observed
    assert 'value:    "ENOBUFS"' in observed and 'expected: "blocks"' in observed
    assert "verdict:  mismatch" in observed


def test_a_hostile_report_cannot_reach_the_terminal_raw(tmp_path, capsys):
    path = save(tmp_path, "r.json", linux_run(10, **{KEY: record(HOSTILE + "\x1b[2J\x07")}))
    _, out, _ = run(capsys, KEY, "--report", str(path))
    assert "\x1b" not in out and "\x07" not in out and "\\u001b[2J" in out


def test_an_unknown_key_is_an_error_with_close_matches(capsys):
    status, out, err = run(capsys, "dgram.ful.blocking_send")
    assert status == 2 and out == ""
    assert "no observation key 'dgram.ful.blocking_send'" in err
    assert "Did you mean: dgram.full.blocking_send" in err


def test_a_prefix_lists_the_keys_under_it(capsys):
    status, _, err = run(capsys, "dgram.truncation")
    assert status == 2
    assert "dgram.truncation.received" in err and "dgram.truncation.msg_trunc_flag" in err
