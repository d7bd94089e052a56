"""Evidence: ``observed`` here, ``reported`` by others from a real machine (with links and
the release it was seen on), or ``source`` only; the checker, the records, ``explain``,
``bless`` and the summaries keep the three apart, and evidence never gets weaker."""
import pytest

from ipcmatrix import cli, expectations, explain, render_markdown, report, verdict
from ipcmatrix.expectations import TABLES_DIR
from sample_reports import MACOS, make, record, save

from table_files import TableFiles

KNOWN = {"dgram.full.blocking_send", "dgram.zero_length", "stream.msg_nosignal"}
HEADER = '[platform]\nsystem = "Darwin"\n'


def write(tmp_path, body, name="macos.toml"):
    return TableFiles(tmp_path, "Darwin", name, KNOWN).write(body)


def problems_in(path):
    return TableFiles(path.parent, "Darwin", path.name, KNOWN).problems_in(path)


# --- the checker ------------------------------------------------------------------------------

def test_a_reported_entry_without_links_is_refused_at_its_evidence_line(tmp_path):
    path = write(tmp_path, '''
        ["dgram.zero_length"]
        expect = 0
        ref = "xnu bsd/kern/uipc_socket.c sosend"
        evidence = "reported"
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:7: dgram.zero_length: ") and "needs reported_by" in problem


@pytest.mark.parametrize("link", ["see the wazuh issue", "wazuh#37349", "http//example.com/x",
                                  "wazuh/wazuh#0", "", "tests/sys/kern/unix dgram.c"])
def test_a_malformed_link_is_named_with_the_line_of_reported_by(tmp_path, link):
    path = write(tmp_path, f'''
        ["dgram.zero_length"]
        expect = 0
        ref = "x"
        evidence = "reported"
        reported_by = ["wazuh/wazuh#37349", "{link}"]
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:8:") and f"{link!r} is not a link" in problem


def test_the_three_forms_of_link_are_accepted_and_opened_where_they_live():
    cases = {"https://github.com/afborchert/pipebuf#some-results": "url",
             "wazuh/wazuh#37349": "issue", "tests/sys/kern/unix_dgram.c:basic": "test"}
    assert {link: expectations.link_kind(link) for link in cases} == cases
    assert expectations.link_url("wazuh/wazuh#37349") == "https://github.com/wazuh/wazuh/issues/37349"
    assert expectations.link_url("tests/sys/kern/unix_dgram.c:basic", "FreeBSD") == \
        "https://github.com/freebsd/freebsd-src/blob/main/tests/sys/kern/unix_dgram.c"
    assert expectations.link_url("tests/sys/kern/unix_dgram.c", "Plan9") is None


def test_a_report_from_a_release_outside_the_entry_is_refused(tmp_path):
    path = write(tmp_path, '''
        [["stream.msg_nosignal"]]
        expect = "ok"
        ref = "x"
        evidence = "reported"
        reported_by = ["nim-lang/Nim#2484"]
        reported_on = "macOS 10.10"

        [["stream.msg_nosignal"]]
        expect = "no-effect"
        release = "<11"
        ref = "x"
        evidence = "reported"
        reported_by = [{ link = "dlang/phobos#131", on = "macOS 12.1" }, { link = "nim-lang/Nim#2484", on = "OS X 10.10" }]
    ''')
    [problem] = problems_in(path)      # the first entry has no condition: any release counts
    assert problem.startswith(f"{path}:16:")
    assert "'dlang/phobos#131' was seen on macOS 12.1, outside this entry's releases <11" in problem


def test_a_release_limited_entry_must_say_where_its_report_was_seen(tmp_path):
    path = write(tmp_path, '''
        ["stream.msg_nosignal"]
        expect = "no-effect"
        release = "<11"
        ref = "x"
        evidence = "reported"
        reported_by = ["nim-lang/Nim#2484"]
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:9:") and "say which release" in problem
    path.write_text(path.read_text() + 'reported_on = "Catalina"\n')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:9:") and "give the release as a number" in problem


def test_links_on_an_entry_marked_source_are_refused(tmp_path):
    path = write(tmp_path, '''
        ["dgram.zero_length"]
        expect = 0
        ref = "x"
        evidence = "source"
        reported_by = ["wazuh/wazuh#37349"]
    ''')
    [problem] = problems_in(path)
    assert problem.startswith(f"{path}:7:") and 'never "source"' in problem


def test_the_shipped_tables_have_20_macos_and_10_freebsd_entries_reported_with_links():
    tables = {t.name: t for t in expectations.load_all()}
    for name, at_least in (("macos", 20), ("freebsd", 10)):
        reported = [(key, entry) for key, entries in tables[name].entries.items()
                    for entry in entries if entry["evidence"] == "reported"]
        assert len(reported) >= at_least, name
        for key, entry in reported:
            reports = expectations.reports_of(entry)
            assert reports, key
            for found in reports:
                assert expectations.link_kind(found["link"]), (name, key, found)
                url = expectations.link_url(found["link"], tables[name].platform["system"])
                assert url and url.startswith("https://"), (name, key, found)


def test_no_shipped_macos_or_freebsd_ref_cites_our_notes():
    for table in expectations.load_all():
        if table.name not in ("macos", "freebsd"):
            continue
        for key, entries in table.entries.items():
            for entry in entries:
                assert "-facts" not in entry["ref"] and "course notes" not in entry["ref"], \
                    table.where(key)


# --- records, explain, summaries -------------------------------------------------------------

REPORTED = {"expect": "ENOBUFS", "ref": "xnu bsd/kern/uipc_socket2.c", "evidence": "reported",
            "reported_by": [{"link": "wazuh/wazuh#37349", "on": "macOS 15"},
                            "tests/sys/kern/unix_dgram.c:basic"]}


def test_a_judged_record_carries_each_report_with_where_to_open_it():
    record_ = verdict.judge("dgram.full.blocking_send", {"value": "ENOBUFS"}, REPORTED, {},
                            "dgram", system="FreeBSD")
    assert record_["verdict"] == "match" and record_["evidence"] == "reported"
    assert record_["reported_by"] == [
        {"link": "wazuh/wazuh#37349", "url": "https://github.com/wazuh/wazuh/issues/37349",
         "on": "macOS 15"},
        {"link": "tests/sys/kern/unix_dgram.c:basic",
         "url": "https://github.com/freebsd/freebsd-src/blob/main/tests/sys/kern/unix_dgram.c",
         "on": None}]
    shown = verdict.explain_failure("dgram.full.blocking_send", record_)
    assert "  reported: https://github.com/wazuh/wazuh/issues/37349 (on macOS 15)" in shown
    source = verdict.judge("dgram.zero_length", {"value": 0}, {"expect": 0, "ref": "x",
                                                               "evidence": "source"}, {}, "dgram")
    assert "reported_by" not in source


def test_explain_shows_the_three_kinds_apart_with_links(tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    for name, system, evidence in (("aaa", "Linux", "observed"), ("bbb", "Darwin", "reported"),
                                   ("ccc", "FreeBSD", "source")):
        links = 'reported_by = [{ link = "wazuh/wazuh#37349", on = "macOS 15" }]\n' \
            if evidence == "reported" else ""
        (tables / f"{name}.toml").write_text(
            f'[platform]\nsystem = "{system}"\n\n["dgram.full.blocking_send"]\n'
            f'expect = "ENOBUFS"\nref = "ref-{name}"\nevidence = "{evidence}"\n{links}')
    assert cli.main(["explain", "dgram.full.blocking_send", "--tables", str(tables)]) == 0
    out = capsys.readouterr().out
    aaa, bbb, ccc = (out.index(f"  {name} (") for name in ("aaa", "bbb", "ccc"))
    assert "[observed]" in out[aaa:bbb] and "a run of this kit on a real machine saw it" in out[aaa:bbb]
    assert "[reported]" in out[bbb:ccc] and "reported by: wazuh/wazuh#37349  " \
        "<https://github.com/wazuh/wazuh/issues/37349>  (on macOS 15)" in out[bbb:ccc]
    assert "[source]" in out[ccc:] and "source only" in out[ccc:] and "reported by" not in out[ccc:]


def mac_report():
    links = [{"link": "wazuh/wazuh#37349", "url": "https://github.com/wazuh/wazuh/issues/37349",
              "on": "macOS 15"}]
    return make({"dgram.full.blocking_send": {**record("ENOBUFS", evidence="reported", table="macos"),
                                              "reported_by": links},
                 "dgram.oversize": record("EMSGSIZE", evidence="reported", table="macos"),
                 "dgram.zero_length": record(0, evidence="source", table="macos"),
                 "dgram.max_size": record(2048, evidence="observed", table="macos"),
                 "dgram.truesize_small": record("unsupported", verdict="no-expectation")},
                platform=MACOS)


def test_the_run_summary_counts_observed_reported_and_source_only_expectations():
    lines = report.summary_lines(mac_report())
    assert "  expectations (macos.toml): 1 observed, 2 reported, 1 source only" in lines
    assert any("none checked" in line for line in report.summary_lines(
        make({"dgram.zero_length": record(0, verdict="no-expectation")})))


def test_the_markdown_report_shows_the_kind_and_links_to_each_report():
    text = render_markdown.report(mac_report())
    assert "2 reported by others from a real machine" in text
    assert "*(reported, reported by* [wazuh/wazuh\\#37349](https://github.com/wazuh/wazuh/issues/37349)" \
        " on macOS 15*)*" in text
    assert "*(source)*" in text and "*(observed)*" in text


def test_a_hostile_report_url_never_becomes_a_link():
    data = mac_report()
    data["observations"]["dgram.full.blocking_send"]["reported_by"] = [
        {"link": "x/y#1", "url": "javascript:alert(1)"},
        {"link": "x/y#2", "url": "https://e.com/a)](javascript:alert(1)"}]
    text = render_markdown.report(data)
    assert "javascript" not in text and "`x/y#1`" in text and "`x/y#2`" in text


# --- bless ----------------------------------------------------------------------------------

def mac_tables(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "macos.toml").write_text((TABLES_DIR / "macos.toml").read_text())
    return tables


RANK = {"source": 0, "reported": 1, "observed": 2}


def evidence_of(path):
    table = expectations.load(path)
    return {(key, i): (e["evidence"], e.get("reported_by"))
            for key, entries in table.entries.items() for i, e in enumerate(entries)}


def test_bless_upgrades_a_reported_entry_to_observed_keeping_its_links(tmp_path, capsys):
    tables = mac_tables(tmp_path)
    before = evidence_of(tables / "macos.toml")
    assert before[("dgram.full.blocking_send", 0)][0] == "reported"
    data = make({"dgram.full.blocking_send": record("ENOBUFS", table="macos", evidence="reported"),
                 "dgram.zero_length": record(0, table="macos", evidence="source")}, platform=MACOS)
    status = cli.main(["bless", str(save(tmp_path, "mac.json", data)), "--tables", str(tables)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "confirmed dgram.full.blocking_send: evidence reported -> observed (reported_by kept)" in out
    assert "confirmed dgram.zero_length: evidence source -> observed" in out
    after = evidence_of(tables / "macos.toml")
    assert after[("dgram.full.blocking_send", 0)] == ("observed", before[("dgram.full.blocking_send", 0)][1])
    for where, (evidence, links) in before.items():    # nothing got weaker, no link was lost
        assert RANK[after[where][0]] >= RANK[evidence], where
        assert after[where][1] == links, where


def test_bless_leaves_an_observed_entry_observed(tmp_path, capsys):
    tables = mac_tables(tmp_path)
    path = tables / "macos.toml"
    path.write_text(path.read_text().replace(
        'evidence = "reported"\nreported_by = ["django/asgi_ipc#4"]',
        'evidence = "observed"\nreported_by = ["django/asgi_ipc#4"]', 1))
    assert evidence_of(path)[("sem.named.name_max", 0)][0] == "observed"
    before = path.read_text()
    data = make({"sem.named.name_max": record(30, table="macos")}, platform=MACOS)
    status = cli.main(["bless", str(save(tmp_path, "mac.json", data)), "--tables", str(tables)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "1 unchanged" in out and path.read_text() == before


def test_bless_refuses_a_value_that_contradicts_what_others_reported(tmp_path, capsys):
    tables = mac_tables(tmp_path)
    before = (tables / "macos.toml").read_bytes()
    data = make({"dgram.full.blocking_send": record("blocks", verdict="mismatch", table="macos")},
                platform=MACOS)
    status = cli.main(["bless", str(save(tmp_path, "mac.json", data)), "--tables", str(tables)])
    _, err = capsys.readouterr()
    assert status == 1 and "refused, nothing written" in err
    assert "reported from a real machine by wazuh/wazuh#37349" in err
    assert (tables / "macos.toml").read_bytes() == before
