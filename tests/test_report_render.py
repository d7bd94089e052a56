"""`ipcmatrix report`: Markdown and HTML that say what the platform did, mismatches first,
and that render every value of an untrusted report as inert text."""
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from ipcmatrix import cli, compare, render_html, render_markdown, report, view
from sample_reports import HOSTILE, LINUX, live_markup, make, record, save


def sample():
    return make({
        "dgram.truncation.received": record("ABC"),
        "dgram.full.blocking_send": record("ENOBUFS", verdict="mismatch", expected="blocks",
                                           ref="af_unix.c unix_wait_for_peer"),
        "dgram.max_size": record(212960, rule="formula: 'dgram.sndbuf_default - 32'",
                                 evidence="source"),
        "dgram.oversize": record(error="probe crashed: SIGSEGV", verdict="error"),
        "seed.flood.outcome": record("deadlock"),
    })


def hostile():
    return make({
        "dgram.truncation.received": record(HOSTILE, verdict="mismatch", expected=HOSTILE,
                                            ref=HOSTILE, note=HOSTILE),
        "dgram.zero_length": record(error=HOSTILE, verdict="error"),
        "dgram.<b>bold</b>|key": record([HOSTILE, {"k|`": "</td>"}]),
    }, platform={**LINUX, "release": HOSTILE, "tunables": {HOSTILE: HOSTILE}})


def family_rows(markdown, family):
    """The key column of a family's table, in order."""
    section = markdown.split(family + " ·", 1)[1]
    return re.findall(r"^\| `([^`]+)` \|", section.split("\n\n", 2)[1], flags=re.M)


def test_markdown_puts_platform_and_tunables_on_top_then_mismatches_first():
    text = render_markdown.report(sample(), "r.json")
    assert text.index("| system | Linux |") < text.index("`net.unix.max_dgram_qlen`") \
        < text.index("## dgram")
    assert family_rows(text, "dgram") == ["dgram.full.blocking_send", "dgram.oversize",
                                          "dgram.max_size", "dgram.truncation.received"]
    row = next(line for line in text.splitlines() if line.startswith("| `dgram.full.blocking_send`"))
    assert '`"ENOBUFS"`' in row and '`"blocks"`' in row and "❌ mismatch" in row
    assert "unix\\_wait\\_for\\_peer" in row and "*(observed)*" in row


def test_markdown_keeps_errors_apart_from_values_and_counts_evidence():
    text = render_markdown.report(sample())
    row = next(line for line in text.splitlines() if line.startswith("| `dgram.oversize`"))
    assert "⚠️ error: probe crashed: SIGSEGV" in row and "`probe" not in row
    # all five keys had an expectation: four observed on a real machine, one from source
    assert "5 checked in this run, 4 of them observed on a real machine and 1 derived from source" in text


def test_a_family_where_everything_matched_folds_away_and_problems_do_not():
    text = render_markdown.report(sample())
    assert "<details><summary>seed · 1 keys: 1 match</summary>" in text
    assert "## dgram · 4 keys" in text


def unescaped_pipes(line):
    return len(re.findall(r"(?<!\\)\|", line))




def test_hostile_values_stay_text_in_markdown():
    text = render_markdown.report(hostile())
    for line in text.splitlines():
        if line.startswith("|"):
            assert unescaped_pipes(line) in (3, 6), line   # 2 or 5 cells: no cell split by a value
        assert not line.startswith("#") or re.match(r"#{1,2} (ipcmatrix report:|dgram ·) ", line), line
        live = live_markup(line)
        assert set(live) <= {"*"} and len(live) % 2 == 0, (line, live)  # only our bold/italics
    # the value is there, as code, with its newline escaped
    assert "<script>document.title=" in text and "\\n# heading" in text


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.attrs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)


def policy_of(page):
    return html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)[1])


@pytest.mark.parametrize("render", [
    lambda: render_html.report(hostile()),
    lambda: render_html.matrix(compare.matrix([("a.json", hostile()), ("b.json", sample())])),
], ids=["report", "matrix"])
def test_hostile_values_stay_text_in_html(render):
    page = render()
    parsed = Elements()
    parsed.feed(page)
    # The one script is the page's own filter, allowed by its hash and nothing else.
    assert parsed.tags.count("script") == 1 and page.count("<script>") == 1
    assert "img" not in parsed.tags and "b" not in parsed.tags
    assert not any(name.startswith("on") for name in parsed.attrs)
    assert '<script>document.title="pwned"</script>' in html.unescape("".join(parsed.text))
    policy = policy_of(page)
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    assert f"script-src {render_html._hash(script)};" in policy and "default-src 'none'" in policy
    assert "unsafe" not in policy


def test_hostile_reported_by_links_and_ids_stay_inert():
    data = hostile()
    data["observations"]["dgram.zero_length"]["reported_by"] = [
        {"link": "javascript:alert(1)", "url": "javascript:alert(1)"},
        {"link": HOSTILE, "url": 'https://x.example/"><script>', "on": HOSTILE},
        {"link": "python/cpython#1234", "url": "https://github.com/python/cpython/issues/1234",
         "on": "macOS 15"}]
    page = render_html.report(data)
    assert 'href="javascript' not in page and page.count("<script>") == 1
    assert 'href="https://x.example/' not in page        # a URL with markup in it is no link
    assert 'href="https://github.com/python/cpython/issues/1234" rel="noreferrer">' \
           'python/cpython#1234</a> on macOS 15' in page
    ids = re.findall(r' id="([^"]*)"', page)
    assert all(not re.search(r"\s", i) for i in ids) and len(ids) == len(set(ids))


@pytest.mark.parametrize("render", [
    lambda: render_html.report(sample(), "r.json"),
    lambda: render_html.matrix(compare.matrix([("a.json", sample()), ("b.json", sample())])),
    lambda: cli.main(["matrix", "--html", "-"]) and "",
], ids=["report", "matrix", "expected-matrix"])
def test_every_page_loads_nothing_from_anywhere(render, capsys):
    page = render() or capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""\ssrc\s*=""", page) and "<link" not in page
    assert "@import" not in page and "url(" not in page
    # The only addresses are links a reader may follow (reported_by), never fetched.
    assert all(href.startswith(("#", "https://")) for href in re.findall(r'href="([^"]*)"', page))
    assert "default-src 'none'" in policy_of(page)


def test_html_is_self_contained_with_colour_per_verdict():
    page = render_html.report(sample(), "r.json")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page
    assert '<tr id="k-dgram.full.blocking_send" class="key v-mismatch" ' \
           'data-key="dgram.full.blocking_send" data-verdict="mismatch">' in page
    assert ".v-mismatch { background:" in page


def test_html_report_puts_problem_families_first_open_and_folds_the_rest():
    page = render_html.report(sample(), "r.json")
    assert page.index('id="family-dgram"') < page.index('id="family-seed"')
    assert '<details class="family" id="family-dgram" open data-open>' in page
    assert '<details class="family" id="family-seed">' in page      # everything matched: folded
    attention = re.search(r'<p class="attention">.*?</p>', page)[0]
    assert attention.index("dgram.full.blocking_send") < attention.index("dgram.oversize")
    assert 'href="#verdict=mismatch"' in page and 'value="error" checked' in page


def test_an_error_row_shows_the_rule_as_what_was_expected():
    page = render_html.report(sample())
    row = re.search(r'<tr id="k-dgram.oversize".*?</tr>', page)[0]
    assert "<em>error</em>: probe crashed: SIGSEGV" in row
    assert "expect: None" in row     # the rule record() gave it; never an empty expected cell


@pytest.mark.parametrize("verdict, cls, mark", [("informational", "v-other", "(informational)"),
                                                 ("timing", "v-timing", "ℹ️")])
def test_a_verdict_beyond_the_five_is_drawn_apart_and_labelled(verdict, cls, mark):
    data = sample()
    data["observations"]["seed.flood.outcome"].update(verdict=verdict, held=False)
    data["observations"]["dgram.max_size"]["verdict"] = verdict
    page = render_html.report(data)
    assert f'<span class="badge {cls}">2 {verdict}</span>' in page
    assert "the claim did not hold" in page
    rows = re.findall(r'<tr id="k-(dgram[^"]*)"', page)
    assert rows == ["dgram.full.blocking_send", "dgram.oversize", "dgram.max_size",
                    "dgram.truncation.received"]      # after the problems, before the matches
    m = compare.matrix([("a.json", data), ("b.json", sample())])
    assert f"cell {cls}" in render_html.matrix(m)
    assert f"{mark} {render_markdown.code(view.show('deadlock'))}" in render_markdown.matrix(m)
    grid = compare.grid([("a.json", data)])
    assert grid["seed"][0].counts[verdict] == 1 and grid["seed"][0].text() == "1/1"  # no failure
    summary = render_markdown.step_summary(data)
    assert "What went wrong: 2 keys" in summary and f"2** {verdict}" in summary


def test_the_report_command_writes_markdown_and_html(tmp_path, capsys):
    path = save(tmp_path, "r.json", sample())
    assert cli.main(["report", str(path), "--md", str(tmp_path / "r.md"),
                     "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("# ipcmatrix report: linux 6.1.0 x86\\_64")
    assert "<!DOCTYPE html>" in (tmp_path / "r.html").read_text()
    assert cli.main(["report", str(path)]) == 0
    assert "dgram.full.blocking_send" in capsys.readouterr().out


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    (json.dumps({"schema": "ipcmatrix-report/1", "platform": {}, "observations": {
        "k": {"verdict": "pwned", "value": 1}}}), "unknown verdict 'pwned'"),
    (json.dumps({"schema": "ipcmatrix-report/1", "platform": {"system": ["Linux"]},
                 "observations": {}}), "platform.system must be a string"),
    ('{"schema": "ipcmatrix-report/1", "platform": {}, "observations": {}, "x": "\\ud800"}', None),
])
def test_malformed_reports_get_a_clear_error_naming_the_file(tmp_path, capsys, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    if problem is None:   # a lone surrogate is valid JSON and harmless: it renders as an escape
        assert cli.main(["report", str(path)]) == 0
        return
    assert cli.main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and problem in err


def test_an_oversized_report_is_refused_without_reading_it_all(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "MAX_REPORT_BYTES", 1000)
    path = save(tmp_path, "big.json", make({"dgram.max_size": record("x" * 2000)}))
    assert cli.main(["report", str(path)]) == 2
    assert f"{path}: larger than a report can be (1000 bytes)" in capsys.readouterr().err


def test_a_report_read_from_a_pipe_is_bounded_too(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_REPORT_BYTES", 1000)
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom ipcmatrix import cli, report\n"
         "report.MAX_REPORT_BYTES = 1000\nsys.exit(cli.main(['report', '/dev/stdin']))"],
        input="x" * 100_000, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "larger than a report can be" in done.stderr


def test_the_step_summary_is_cut_under_its_limit_with_a_note():
    many = {f"dgram.key{i:05d}": record("v" * 150, verdict="mismatch", expected="w")
            for i in range(3000)}
    text = render_markdown.step_summary(make(many), report_path="reports/big.json", limit=50_000)
    assert len(text.encode()) <= 50_000
    assert "Truncated" in text and "`reports/big.json`" in text
    assert text.count("<details") == text.count("</details>")
    small = render_markdown.step_summary(sample(), report_path="r.json")
    assert "Truncated" not in small and small.startswith("## ipcmatrix report")


def test_the_step_summary_puts_failures_first_then_the_grid_then_the_run():
    text = render_markdown.step_summary(sample(), report_path="r.json")
    failures = text.index("### What went wrong: 2 keys")
    assert failures < text.index("| dgram | ❌ 2/4 |") < text.index("| system | Linux |") \
        < text.index("### dgram ·")
    table = text[failures:].split("\n\n")[1].splitlines()[2:]
    assert [line.split("`")[1] for line in table] == ["dgram.full.blocking_send", "dgram.oversize"]
    assert "| seed | ✅ 1/1 |" in text
    clean = render_markdown.step_summary(make({"seed.flood.outcome": record("deadlock")}))
    assert "Every key measured matched" in clean and "What went wrong" not in clean


def test_the_step_summary_of_an_unknown_platform_gives_the_command_to_record_it():
    data = make({}, unknown_platform="No expectation table describes Darwin 26.0 (arm64). Record "
                "this platform from a run's report with:\n    ipcmatrix bless REPORT.json --platform macos-26")
    text = render_markdown.step_summary(data, report_path="reports/mac.json", tables="my tables")
    assert "> `ipcmatrix bless reports/mac.json --tables 'my tables' --platform macos-26`" in text


def hostile_tables(tmp_path):
    """A tables directory someone else wrote (``--tables DIR``): markup everywhere it can go."""
    evil = HOSTILE.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    (tmp_path / "evil.toml").write_text(
        f'[platform]\nname = "{evil}"\nsystem = "{evil}"\n\n'
        f'[["dgram.full.blocking_send"]]\nexpect = "{evil}"\nref = "{evil}"\nevidence = "source"\n'
        f'note = "{evil}"\n\n'
        f'[["dgram.full.blocking_send"]]\none_of = ["{evil}", 1]\nrelease = ">=2"\nref = "r"\n'
        f'evidence = "observed"\nobserved_on = "{evil}"\n')
    from ipcmatrix import expectations, matrix
    return matrix.build(expectations.load_all(tmp_path))


def test_hostile_tables_stay_text_in_the_expected_matrix(tmp_path):
    em = hostile_tables(tmp_path)
    page = render_html.expected_matrix(em)
    parsed = Elements()
    parsed.feed(page)
    assert parsed.tags.count("script") == 1 and "img" not in parsed.tags
    assert not any(name.startswith("on") for name in parsed.attrs)
    assert '<script>document.title="pwned"</script>' in html.unescape("".join(parsed.text))
    text = render_markdown.expected_matrix(em)
    for line in text.splitlines():
        if line.startswith("| `dgram"):
            assert unescaped_pipes(line) == 3, line          # key and one platform: 2 cells
        live = live_markup(line)
        assert set(live) <= {"*"} and len(live) % 2 == 0, (line, live)


def test_hostile_values_stay_text_in_the_step_summary_and_the_matrix_grid():
    text = render_markdown.step_summary(hostile(), report_path="r.json")
    grid = render_markdown.matrix(compare.matrix([("a.json", hostile()), ("b.json", sample())]))
    ours = re.compile(r"\[([a-z0-9_-]+)\]\(#\1\)")       # the grid's links to its families
    for line in text.splitlines() + [ours.sub(r"\1", line) for line in grid.splitlines()]:
        assert not line.startswith("#") or re.match(r"#{1,3} (ipcmatrix |What went wrong|dgram ·|dgram$|seed$|Notes)", line), line
        live = live_markup(line)
        assert set(live) <= {"*"} and len(live) % 2 == 0, (line, live)
