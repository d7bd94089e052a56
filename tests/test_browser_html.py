"""The HTML pages in a real headless browser (Debian's Chromium, installed by .ci/run):
they render, their own script runs under their Content-Security-Policy while a hostile
value does not, the "only keys that differ" filter works, and a screenshot can be taken."""
import os
import shutil
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ipcmatrix import compare, render_html
from sample_reports import HOSTILE, linux_run, record

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]


@pytest.fixture
def browser(tmp_path):
    """Run Chromium on a page; everything it writes stays under tmp_path."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); .ci/run installs it "
                    "(apt-get install chromium)")
    # A short directory: Chromium puts a unix socket in TMPDIR (sun_path is ~108 bytes).
    home = Path(tempfile.mkdtemp(prefix="chromium-ipcmatrix-"))
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(home)}

    def run(url, *args):
        profile = home / f"profile-{len(list(home.glob('profile-*')))}"
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout
    try:
        yield run
    finally:
        shutil.rmtree(home, ignore_errors=True)


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


@pytest.fixture
def matrix_page(tmp_path):
    hostile = {"dgram.full.blocking_send": record(HOSTILE)}
    m = compare.matrix([("q10.json", linux_run(10, **hostile)), ("q512.json", linux_run(512, **hostile))])
    path = tmp_path / "matrix.html"
    path.write_text(render_html.matrix(m))
    return path, m


def test_the_filter_shows_only_differing_keys_when_the_url_asks(browser, matrix_page):
    path, m = matrix_page
    dom = browser(f"{path.as_uri()}#different", "--dump-dom")
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


def test_a_report_page_renders_to_a_screenshot(browser, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html.report(linux_run(10, **{
        "dgram.max_size": record(1, verdict="mismatch", expected=212960)})))
    shot = tmp_path / "shot.png"
    browser(page.as_uri(), f"--screenshot={shot}", "--window-size=1024,768")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1024, 768)
    assert len(png) > 10_000      # a blank page compresses to far less
