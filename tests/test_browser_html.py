"""The HTML pages in a real headless browser (Debian's Chromium, installed by .ci/run):
they render, their own script runs under their Content-Security-Policy while a hostile
value does not, what went wrong is on the first screen, the filters work when clicked,
the matrix header stays in view, and each page leaves a screenshot.

Screenshots go to $IPCMATRIX_ARTIFACTS when it is set (CI can keep that directory), else
to pytest's tmp dir; each test prints where.  To measure a page, a test adds a small
script of its own (``MEASURE``) and allows it by hash in a copy of the page's policy: it
clicks, scrolls and writes what it found into the DOM, which Chromium then dumps."""
import base64
import hashlib
import html
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ipcmatrix import catalogue, cli, compare, expectations, matrix, render_html, report
from sample_reports import HOSTILE, linux_run, make, record
from test_compare import namespaces_available, run_in_namespace

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
WIDTH, HEIGHT = 1280, 800


@pytest.fixture
def browser(tmp_path):
    """Run Chromium on a page; everything it writes stays under a private directory."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); .ci/run installs it "
                    "(apt-get install chromium)")
    # A short directory: Chromium puts a unix socket in TMPDIR (sun_path is ~108 bytes).
    home = Path(tempfile.mkdtemp(prefix="chromium-ipcmatrix-"))
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(home)}

    def run(url, *args):
        profile = home / f"profile-{len(list(home.glob('profile-*')))}"
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={WIDTH},{HEIGHT}", *args, url],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout
    try:
        yield run
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def artifacts(tmp_path, request):
    where = Path(os.environ.get("IPCMATRIX_ARTIFACTS") or tmp_path) / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    return where


def screenshot(browser, url, path):
    """A first-screen PNG of ``url`` at ``path``; checked to be a real, non-blank picture."""
    browser(url, f"--screenshot={path}")
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)
    assert len(png) > 10_000      # a blank page compresses to far less
    print(f"screenshot: {path}")
    return path


# --- measuring a page ----------------------------------------------------------------------

MEASURE = """
(function () {
  "use strict";
  var steps = JSON.parse(document.getElementById("steps").textContent), out = {};
  function shown() {
    return Array.prototype.slice.call(document.querySelectorAll("tr.key"))
      .filter(function (r) { return r.offsetParent !== null; })
      .map(function (r) { return r.getAttribute("data-key"); });
  }
  function tops() {
    var found = {};
    document.querySelectorAll("tr.key").forEach(function (r) {
      if (r.offsetParent !== null) {
        found[r.getAttribute("data-key")] = r.getBoundingClientRect().top + window.scrollY;
      }
    });
    return found;
  }
  function step(i) {
    if (i === steps.length) {
      var pre = document.createElement("pre");
      pre.id = "measured";
      pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);
      return;
    }
    var s = steps[i];
    if (s.click) { document.querySelector(s.click).click(); }
    if (s.scroll !== undefined) { window.scrollTo(0, s.scroll); }
    if (s.shown) { out[s.shown] = shown(); }
    if (s.tops) { out[s.tops] = tops(); out.viewport = window.innerHeight; }
    if (s.header) {
      out[s.header] = document.querySelector("table.matrix thead th").getBoundingClientRect().top;
    }
    if (s.hash) { out[s.hash] = location.hash; }
    if (s.target) {
      out[s.target] = [document.getElementById(location.hash.slice(1)).getBoundingClientRect().top,
                       document.querySelector("table.matrix thead th").getBoundingClientRect().bottom];
    }
    if (s.open) {
      out[s.open] = Array.prototype.slice.call(document.querySelectorAll("details.family"))
        .filter(function (d) { return d.open && !d.hidden; }).map(function (d) { return d.id; });
    }
    setTimeout(function () { step(i + 1); }, 100);
  }
  setTimeout(function () { step(0); }, 50);
}());
"""


def _sha(source):
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def measure(browser, page_text, tmp_path, steps, fragment=""):
    """Load a copy of the page with MEASURE added (and allowed by hash), run ``steps``."""
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page_text)[1]
    widened = policy.replace("script-src ", f"script-src {_sha(MEASURE)} ", 1)
    assert widened != policy
    data = json.dumps(steps).replace("</", "<\\/")
    instrumented = page_text.replace(policy, widened, 1).replace(
        "</body>", f'<script type="application/json" id="steps">{data}</script>'
                   f"<script>{MEASURE}</script></body>", 1)
    path = tmp_path / f"measured-{len(list(tmp_path.glob('measured-*')))}.html"
    path.write_text(instrumented)
    dom = browser(path.as_uri() + fragment, "--dump-dom")
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, flags=re.S)
    assert found, "the measuring script did not finish"
    return json.loads(html.unescape(found[1])), dom


class Rows(HTMLParser):
    """The matrix rows a reader sees: not hidden, and not inside a hidden tbody."""

    def __init__(self):
        super().__init__()
        self.visible, self.all, self.title, self._in_title = [], [], "", False
        self._tbody_hidden = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody":
            self._tbody_hidden = "hidden" in attrs
        if tag == "tr" and "data-key" in attrs and "key" in attrs.get("class", ""):
            self.all.append(attrs["data-key"])
            if "hidden" not in attrs and not self._tbody_hidden:
                self.visible.append(attrs["data-key"])
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def rows_of(dom):
    parsed = Rows()
    parsed.feed(dom)
    return parsed


# --- the single-run report -------------------------------------------------------------------

def full_run(mismatch_key, **changes):
    """A report of every key the kit declares, all matching but ``mismatch_key``."""
    observations = {key: record(1, ref=f"ref of {key}") for key in catalogue.catalogue()}
    observations[mismatch_key] = record("EAGAIN", verdict="mismatch", expected="blocks")
    observations.update(changes)
    return make(observations)


def late_key():
    """A key of the last family, alphabetically: without the fix it sat at the bottom."""
    last = max(catalogue.families())
    return sorted(k for k, o in catalogue.catalogue().items() if o.family == last)[0]


def test_the_one_mismatch_of_a_late_family_is_on_the_first_screen(browser, tmp_path, artifacts):
    key = late_key()
    page = render_html.report(full_run(key))
    found, _ = measure(browser, page, tmp_path, [{"tops": "tops"}, {"open": "open"}])
    tops = found["tops"]
    # (Chromium's headless window keeps some of its height for itself: measure the page's.)
    assert key in tops and tops[key] + 30 < found["viewport"] and found["viewport"] > 600
    earlier = [k for k in tops if k.split(".")[0] < key.split(".")[0]]
    # Every other family matched and is folded: no matching row of an earlier family shows
    # at all, let alone above the mismatch.
    assert all(tops[k] > tops[key] for k in earlier)
    assert found["open"] == [f"family-{key.split('.')[0]}"]
    path = tmp_path / "report.html"
    path.write_text(page)
    screenshot(browser, path.as_uri(), artifacts / "report-one-late-mismatch.png")


def test_the_verdict_filter_works_when_clicked(browser, tmp_path):
    key = late_key()
    page = render_html.report(full_run(key, **{
        "dgram.max_size": record(error="probe crashed: SIGSEGV", verdict="error",
                                 rule="formula: 'dgram.sndbuf_default - 32'")}))
    everything = len(catalogue.catalogue())
    found, dom = measure(browser, page, tmp_path, [
        {"shown": "start"},
        {"click": 'input.verdict-filter[value="match"]'}, {"shown": "no_match", "hash": "hash"},
        {"click": 'input.verdict-filter[value="error"]'}, {"shown": "mismatch_only"},
        {"click": 'a[href="#all"]'}, {"shown": "all", "open": "open_again"},
        {"click": 'a[href="#verdict=match"]'}, {"shown": "match_only", "open": "open_match"}])
    # What went wrong first: the mismatch's family, then the error's, then the rest.
    start = found["start"]
    assert start[0] == key and start.index("dgram.max_size") < min(
        i for i, k in enumerate(start) if k.split(".")[0] not in (key.split(".")[0], "dgram"))
    assert start[start.index("dgram.max_size") - 1].split(".")[0] != "dgram"
    assert sorted(found["no_match"]) == sorted([key, "dgram.max_size"])
    assert found["hash"] == "#verdict=mismatch,error"         # the view can be linked to
    assert found["mismatch_only"] == [key]
    assert len(found["all"]) == everything and len(found["open_again"]) == 2
    assert len(found["match_only"]) == everything - 2
    families = {k.split(".")[0] for k in catalogue.catalogue()}
    assert len(found["open_match"]) == len(families)     # the folded families open
    assert 'id="shown">' in dom


def test_an_error_row_shows_the_rule_it_was_held_to():
    page = render_html.report(full_run(late_key(), **{
        "dgram.max_size": record(error="probe crashed", verdict="error",
                                 rule="formula: 'dgram.sndbuf_default - 32'")}))
    row = re.search(r'<tr id="k-dgram.max_size".*?</tr>', page)[0]
    assert "formula: &#x27;dgram.sndbuf_default - 32&#x27;" in row
    assert 'href="#k-dgram.max_size"' in row        # the badge links to the key's anchor


def test_a_link_to_a_folded_key_opens_its_family(browser, tmp_path):
    page = render_html.report(full_run(late_key()))
    found, _ = measure(browser, page, tmp_path, [{"open": "open", "tops": "tops"}],
                       fragment="#k-dgram.max_size")
    assert "family-dgram" in found["open"] and "dgram.max_size" in found["tops"]


def test_an_unknown_verdict_is_drawn_neutrally_and_named(browser, tmp_path):
    data = full_run(late_key())
    data["observations"]["dgram.max_size"]["verdict"] = "informational"   # a newer kit's
    page = render_html.report(data)
    assert 'class="badge v-other">1 informational<' in page
    found, _ = measure(browser, page, tmp_path, [
        {"click": 'input.verdict-filter[value="informational"]'}, {"shown": "without"}])
    assert "dgram.max_size" not in found["without"]


# --- the matrix ----------------------------------------------------------------------------

@pytest.fixture
def matrix_page(tmp_path):
    hostile = {"dgram.full.blocking_send": record(HOSTILE)}
    m = compare.matrix([("q10.json", linux_run(10, **hostile)), ("q512.json", linux_run(512, **hostile))])
    path = tmp_path / "matrix.html"
    path.write_text(render_html.matrix(m))
    return path, m


def test_the_filter_shows_only_differing_keys_when_the_url_asks(browser, matrix_page):
    path, m = matrix_page
    dom = browser(f"{path.as_uri()}#differs", "--dump-dom")
    rows = rows_of(dom)
    assert rows.all == [r.key for r in m.rows] and len(rows.all) == 7
    assert rows.visible == ["dgram.queue.capacity_unconnected"]
    assert 'id="shown">1 key shown<' in dom            # the page's own script ran
    assert rows.title == "ipcmatrix compare: 2 runs"    # the hostile value's script did not
    assert "pwned" not in rows.title and "&lt;script&gt;document.title" in dom


def test_without_the_fragment_every_key_is_shown(browser, matrix_page):
    path, m = matrix_page
    rows = rows_of(browser(path.as_uri(), "--dump-dom"))
    assert rows.visible == rows.all == [r.key for r in m.rows]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two real seed+dgram runs in private network namespaces, max_dgram_qlen 10 and 512."""
    reason = namespaces_available()
    if reason:
        pytest.skip(reason)
    where = tmp_path_factory.mktemp("qlen")
    paths = [where / "q10.json", where / "q512.json"]
    for qlen, path in zip((10, 512), paths):
        done = run_in_namespace(qlen, path)
        assert path.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    return [(str(p), report.read(p)) for p in paths]


def test_the_matrix_of_the_qlen_10_and_512_runs_in_a_browser(browser, tmp_path, real_runs, artifacts):
    m = compare.matrix(real_runs)
    page = render_html.matrix(m)
    found, _ = measure(browser, page, tmp_path, [
        {"shown": "start"},
        {"click": "#only-different"}, {"shown": "differs", "hash": "hash"},
        {"click": "#only-different"}, {"click": "#only-problems"}, {"shown": "problems"},
        {"click": "#only-problems"}, {"scroll": 2500, "header": "header_top"}])
    assert found["start"] == [r.key for r in m.rows]
    assert set(found["differs"]) == {r.key for r in m.differing} == {
        "dgram.queue.capacity_unconnected", "seed.flood.deadlock_threshold",
        "dgram.full.poll_writable_unconnected"}
    assert found["hash"] == "#differs"
    assert found["problems"] == [r.key for r in m.with_problems]   # each run matches its table
    assert abs(found["header_top"]) < 1                            # the header stays on top
    grid = dict(m.grid)
    assert [t.text() for t in grid["dgram"]] == [f"{t.total}/{t.total}" for t in grid["dgram"]]
    path = tmp_path / "matrix.html"
    path.write_text(page)
    screenshot(browser, path.as_uri(), artifacts / "matrix-qlen-10-512.png")
    screenshot(browser, path.as_uri() + "#differs", artifacts / "matrix-qlen-10-512-differs.png")


def test_matrix_cells_are_coloured_by_verdict_and_errors_say_why(browser, tmp_path, artifacts):
    q512 = linux_run(512, **{"dgram.max_size": record(5, verdict="mismatch", expected=212960),
                             "dgram.truesize_small": record(error="probe crashed: SIGSEGV",
                                                            verdict="error", rule="range: [256, 4096]")})
    m = compare.matrix([("q10.json", linux_run(10)), ("q512.json", q512)])
    page = render_html.matrix(m)
    row = re.search(r'<tr id="k-dgram.truesize_small".*?</tr>', page)[0]
    assert 'class="cell v-error kind-error odd" title="error; probe crashed: SIGSEGV; expected range' in row
    cell = re.search(r'<td class="cell v-error.*?</td>', row)[0]
    assert '<span class="sub">probe crashed: SIGSEGV</span>' in cell             # in place too
    assert 'class="cell v-mismatch' in page and "expected 212960" in page
    found, _ = measure(browser, page, tmp_path, [{"click": "#only-problems"}, {"shown": "problems"}])
    assert found["problems"] == ["dgram.max_size", "dgram.truesize_small"]
    path = tmp_path / "m.html"
    path.write_text(page)
    screenshot(browser, path.as_uri(), artifacts / "matrix-verdicts.png")


# --- the expected-behaviour matrix -----------------------------------------------------------

def test_the_expected_behaviour_matrix_of_all_tables_in_a_browser(browser, tmp_path, artifacts):
    out = tmp_path / "expected.html"
    assert cli.main(["matrix", "--html", str(out)]) == 0
    em = matrix.build(expectations.load_all(), catalogue.catalogue())
    found, dom = measure(browser, out.read_text(), tmp_path, [
        {"shown": "start"}, {"click": "#only-different"}, {"shown": "differs"},
        {"scroll": 3000, "header": "header_top"}])
    assert found["start"] == [r.key for r in em.rows] and len(found["start"]) >= len(catalogue.catalogue())
    assert found["differs"] == [r.key for r in em.differing] and 0 < len(found["differs"]) < len(em.rows)
    assert abs(found["header_top"]) < 1
    assert "dgram.full.blocking_send" in found["differs"]
    found, _ = measure(browser, out.read_text(), tmp_path, [{"target": "target"}],
                       fragment="#k-seed.flood.outcome")
    row_top, header_bottom = found["target"]
    assert header_bottom <= row_top < header_bottom + 100    # a linked key is not under the header
    screenshot(browser, out.as_uri(), artifacts / "expected-matrix.png")
    screenshot(browser, out.as_uri() + "#differs", artifacts / "expected-matrix-differs.png")


def test_the_different_option_starts_the_filter_on_and_old_links_still_work(browser, tmp_path):
    m = compare.matrix([("q10.json", linux_run(10)), ("q512.json", linux_run(512))])
    path = tmp_path / "m.html"
    path.write_text(render_html.matrix(m, different_only=True))
    assert rows_of(browser(path.as_uri(), "--dump-dom")).visible == ["dgram.queue.capacity_unconnected"]
    path.write_text(render_html.matrix(m))
    assert rows_of(browser(path.as_uri() + "#different", "--dump-dom")).visible == [
        "dgram.queue.capacity_unconnected"]


def test_a_hostile_report_runs_only_its_own_script(browser, tmp_path):
    data = full_run(late_key(), **{"dgram.max_size": record(HOSTILE, verdict="mismatch",
                                                            expected=HOSTILE, note=HOSTILE)})
    path = tmp_path / "hostile.html"
    path.write_text(render_html.report(data))
    dom = browser(path.as_uri(), "--dump-dom")
    assert rows_of(dom).title == "ipcmatrix report: linux 6.1.0 x86_64"   # no "pwned"
    assert f'id="shown">{len(catalogue.catalogue())} keys shown<' in dom    # its own script ran
    assert "&lt;script&gt;document.title" in dom


def test_a_family_opened_by_hand_stays_open_when_a_link_is_followed(browser, tmp_path):
    key = late_key()
    page = render_html.report(full_run(key))
    found, _ = measure(browser, page, tmp_path, [
        {"click": "#family-dgram > summary"}, {"click": 'p.attention a.key'},
        {"open": "open", "hash": "hash"}])
    assert found["hash"] == f"#k-{key}"
    assert sorted(found["open"]) == sorted(["family-dgram", f"family-{key.split('.')[0]}"])


def test_a_link_to_a_key_the_filter_hides_shows_it(browser, tmp_path):
    m = compare.matrix([("q10.json", linux_run(10)), ("q512.json", linux_run(512))])
    page = render_html.matrix(m, different_only=True)
    found, _ = measure(browser, page, tmp_path, [{"shown": "shown", "target": "target"}],
                       fragment="#k-dgram.max_size")
    assert "dgram.max_size" in found["shown"] and len(found["shown"]) == len(m.rows)
    row_top, header_bottom = found["target"]
    assert header_bottom <= row_top < header_bottom + 100
