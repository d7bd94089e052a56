"""One self-contained HTML file per report or matrix: no network, no external assets.

Every piece of a report is HTML-escaped (text and attributes).  As a second line of
defence each page carries a Content-Security-Policy that allows only its own inline
style and script, by hash: even markup that slipped through could not load or run
anything.

Colour always means a verdict against the run's own table (``VERDICT_COLOURS``); a
verdict this module does not know (a newer kit's) is drawn in a neutral colour and
labelled with its name.  Every key has an anchor (``#k-<key>``); the scripts are small
filters whose state lives in the URL fragment, so a filtered view can be linked to.
"""
from __future__ import annotations

import base64
import hashlib
import re
from html import escape

from ipcmatrix import compare, view

# verdict -> (background, text colour); anything else is drawn as "v-other".
VERDICT_COLOURS = {
    "match": ("#dafbe1", "#1a7f37"),
    "mismatch": ("#ffcecb", "#a40e26"),
    "error": ("#ffe2b8", "#7d4e00"),
    "timeout": ("#e8dcff", "#6639ba"),
    "no-expectation": ("#eaeef2", "#424a53"),
    "timing": ("#ddf4ff", "#0550ae"),        # a timing: reported, never fails a run
    "missing": ("#ffffff", "#8c959f"),
}
OTHER_COLOUR = ("#f6f8fa", "#424a53")
LABELS = {"no-expectation": "no expectation", "missing": "not measured"}
EVIDENCE_COLOURS = {"observed": "#dafbe1", "reported": "#ddf4ff", "source": "#f6f8fa"}


def _verdict_css():
    rules = [f".v-{name} {{ background: {bg}; color: {fg}; }}"
             for name, (bg, fg) in VERDICT_COLOURS.items()]
    rules.append(f".v-other {{ background: {OTHER_COLOUR[0]}; color: {OTHER_COLOUR[1]}; "
                 "outline: 1px dashed #8c959f; outline-offset: -2px; }")
    rules += [f".e-{name} {{ background: {bg}; }}" for name, bg in EVIDENCE_COLOURS.items()]
    return "\n".join(rules)


STYLE = """
:root { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; }
body { margin: 1em auto; max-width: 1400px; padding: 0 1em; }
h1 { font-size: 1.45em; margin: 0 0 .3em; } h2 { font-size: 1.12em; margin: 1.2em 0 .4em; }
a { color: #0550ae; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code, .value { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.facts { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
td.key code { white-space: nowrap; }
td.key a, a.key { color: inherit; text-decoration: none; }
td.key a:hover, a.key:hover { text-decoration: underline; }
.badge { display: inline-block; padding: .05em .6em; border-radius: 1em; margin: .1em .3em .1em 0;
  font-weight: 600; text-decoration: none; white-space: nowrap; }
a.badge:hover { text-decoration: underline; }
.sub { color: #59636e; font-size: .88em; display: block; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .5em .8em; margin: .5em 0; }
.filter { margin: .5em 0; padding: .4em .8em; background: #f6f8fa; border: 1px solid #d0d7de;
  display: flex; flex-wrap: wrap; gap: .3em 1.2em; align-items: center; }
.filter label { white-space: nowrap; }
.attention { margin: .4em 0; }
details.family { margin: .3em 0; }
details.family > summary { cursor: pointer; padding: .2em 0; }
details.family > summary h2 { display: inline; font-size: 1.08em; margin: 0; }
details.family > table { margin-top: .3em; }
table.report td.verdict { white-space: nowrap; }
table.report tr.key td { color: #1f2328; }
.attention a.key { text-decoration: underline; }
table.report tr:target td, table.matrix tr:target td { box-shadow: inset 0 2px 0 #0969da, inset 0 -2px 0 #0969da; }
td.kind-error, td.kind-timeout { font-style: italic; }
td.kind-unsupported .value { font-style: italic; }
.legend { display: flex; flex-wrap: wrap; gap: .3em .8em; align-items: center; margin: .4em 0; }
.legend .swatch { display: inline-block; padding: 0 .5em; border: 1px solid #d0d7de; }
.legend .differs-mark { color: #bf8700; border-left: 4px solid #bf8700; }
table.grid caption { text-align: left; font-weight: 600; padding-bottom: .2em; }
table.matrix tr.key { scroll-margin-top: var(--head, 7em); }  /* a linked row clears the header */
table.matrix thead th { position: sticky; top: 0; z-index: 2; box-shadow: 0 1px 0 #d0d7de; }
table.matrix td.key, table.matrix thead th.key { position: sticky; left: 0; z-index: 1;
  background: #fff; }
table.matrix thead th.key { z-index: 3; background: #f6f8fa; }
table.matrix tr.family-head th { background: #eaeef2; font-size: 1.05em; position: sticky; left: 0; }
table.matrix tr.differs td.key { border-left: 4px solid #bf8700; }
table.matrix td.cell { min-width: 7em; }
td.odd .value { font-weight: 700; }
table.grid td { text-align: center; font-variant-numeric: tabular-nums; }
table.grid td a { color: inherit; }
.variant + .variant { border-top: 1px dotted #8c959f; margin-top: .25em; padding-top: .25em; }
.when { font-size: .85em; color: #424a53; }
.evidence { font-size: .8em; padding: 0 .4em; border-radius: .6em; border: 1px solid #d0d7de; }
ol.notes li { margin-bottom: .5em; }
""" + _verdict_css()

REPORT_SCRIPT = """
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.verdict-filter"));
  var shown = document.getElementById("shown");
  function chosen() {
    return boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
  }
  var applied = null;
  function apply() {
    var want = chosen(), all = want.length === boxes.length, count = 0;
    // Folding follows the filter only when it changes: a family opened by hand stays open.
    var changed = want.join(",") !== applied;
    applied = want.join(",");
    document.querySelectorAll("details.family").forEach(function (family) {
      var visible = 0;
      family.querySelectorAll("tr.key").forEach(function (row) {
        var hide = want.indexOf(row.getAttribute("data-verdict")) < 0;
        row.hidden = hide;
        if (!hide) { visible += 1; }
      });
      family.hidden = visible === 0;
      if (changed) { family.open = all ? family.hasAttribute("data-open") : visible > 0; }
      count += visible;
    });
    shown.textContent = count + (count === 1 ? " key shown" : " keys shown");
  }
  function reveal(id) {
    var target = document.getElementById(id);
    if (!target) { return; }
    var family = target.closest("details.family");
    if (target.hidden || (family && family.hidden)) {
      boxes.forEach(function (b) { b.checked = true; });
      apply();
    }
    if (family) { family.open = true; }
    target.scrollIntoView();
  }
  function fromFragment() {
    var hash = decodeURIComponent(location.hash.slice(1));
    if (hash.indexOf("verdict=") === 0) {
      var want = hash.slice(8).split(",");
      boxes.forEach(function (b) { b.checked = want.indexOf(b.value) >= 0; });
    } else if (hash === "all" || hash === "") {
      boxes.forEach(function (b) { b.checked = true; });
    } else {
      apply();
      reveal(hash);
      return;
    }
    apply();
  }
  boxes.forEach(function (box) {
    box.addEventListener("change", function () {
      var want = chosen();
      location.hash = want.length === boxes.length ? "all" : "verdict=" + want.join(",");
    });
  });
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
}());
"""

MATRIX_SCRIPT = """
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.row-filter"));
  var shown = document.getElementById("shown");
  function apply() {
    var want = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    var count = 0;
    document.querySelectorAll("tbody.family").forEach(function (body) {
      var visible = 0;
      body.querySelectorAll("tr.key").forEach(function (row) {
        var hide = want.some(function (cls) { return !row.classList.contains(cls); });
        row.hidden = hide;
        if (!hide) { visible += 1; }
      });
      body.hidden = visible === 0;
      count += visible;
    });
    shown.textContent = count + (count === 1 ? " key shown" : " keys shown");
  }
  var table = document.querySelector("table.matrix");
  table.style.setProperty("--head", (table.tHead.getBoundingClientRect().height + 6) + "px");
  function fromFragment() {
    var hash = decodeURIComponent(location.hash.slice(1));
    var words = hash.split(",").map(function (w) { return w === "different" ? "differs" : w; });
    var known = boxes.map(function (b) { return b.value; }).concat(["all"]);
    if (hash === "") {
      // no fragment: the filters start as the page was written (--different)
    } else if (words.every(function (w) { return known.indexOf(w) >= 0; })) {
      boxes.forEach(function (b) { b.checked = words.indexOf(b.value) >= 0; });
    } else {
      // A link to a key: show it even when the filter had hidden it.
      apply();
      var target = document.getElementById(hash);
      if (target && (target.hidden || target.parentNode.hidden)) {
        boxes.forEach(function (b) { b.checked = false; });
        apply();
      }
      if (target) { target.scrollIntoView(); }
      return;
    }
    apply();
  }
  boxes.forEach(function (box) {
    box.addEventListener("change", function () {
      var want = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
      location.hash = want.length ? want.join(",") : "all";
    });
  });
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
}());
"""


def _hash(source):
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def page(title, body, script=None):
    """A complete document: its only style and script are inline and allowed by hash."""
    policy = (f"default-src 'none'; style-src {_hash(STYLE)}; "
              f"script-src {_hash(script) if script else chr(39) + 'none' + chr(39)}; "
              "img-src 'none'; base-uri 'none'; form-action 'none'")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             body]
    if script:
        parts.append(f"<script>{script}</script>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# --- small pieces ------------------------------------------------------------------------------

def verdict_class(verdict):
    return f"v-{verdict}" if verdict in VERDICT_COLOURS else "v-other"


def label(verdict):
    return LABELS.get(verdict, verdict or "no verdict")


def anchor(key):
    """The id of a key's row: ``k-`` and the key, whitespace made ``_`` (ids have none)."""
    return "k-" + re.sub(r"\s", "_", view.text(key))


def badge(verdict, n=None, href=None):
    text = escape(label(verdict) if n is None else f"{n} {label(verdict)}")
    cls = f"badge {verdict_class(verdict)}"
    if href:
        return f'<a class="{cls}" href="{escape(href)}">{text}</a>'
    return f'<span class="{cls}">{text}</span>'


def two_columns(header, rows, cls=""):
    body = "".join(f"<tr><th>{escape(n)}</th><td><code>{escape(v)}</code></td></tr>" for n, v in rows)
    return f'<table class="{cls}"><thead><tr><th colspan="2">{escape(header)}</th></tr></thead>' \
           f"<tbody>{body}</tbody></table>"


def sub(text):
    return f'<span class="sub">{escape(text)}</span>' if text else ""


def links(reports):
    """``(link, url, release)`` reports: a link where there is a (checked, https) url."""
    out = []
    for link, url, on in reports:
        shown = (f'<a href="{escape(url)}" rel="noreferrer">{escape(link)}</a>' if url
                 else f"<code>{escape(link)}</code>")
        out.append(shown + (f" on {escape(on)}" if on else ""))
    return ", ".join(out)


def reports_of(r, record):
    """A row's reports: the view's when it reads them, else from the record itself."""
    found = getattr(r, "reported_by", None)
    if found is not None:
        return found
    from ipcmatrix.matrix import SAFE_URL
    out = []
    for item in record.get("reported_by") if isinstance(record.get("reported_by"), list) else []:
        if isinstance(item, dict) and item.get("link"):
            url = item.get("url") if isinstance(item.get("url"), str) else ""
            out.append((view.text(item["link"]), url if SAFE_URL.match(url) else "",
                        view.text(item.get("on"))))
    return out


def counts_of(rows):
    from collections import Counter
    return compare.ordered(Counter(r.verdict for r in rows))


# --- the per-platform report ---------------------------------------------------------------

def report(data, source=""):
    shown = view.report_view(data, source)
    records = _records(data)
    all_rows = [r for rows in shown.families.values() for r in rows]
    counts = counts_of(all_rows)
    out = [f"<h1>{escape(shown.title)}</h1>",
           "<p>" + (" ".join(badge(v, n, f"#verdict={v}") for v, n in counts)
                    or "nothing was measured") + "</p>"]
    out += [f'<div class="warning">{escape(w)}' + (f" <code>{escape(c)}</code>" if c else "") + "</div>"
            for w, c in shown.warnings]
    out.append(attention(all_rows))
    out.append(verdict_filter(counts, len(all_rows)))
    families = sorted(shown.families.items(), key=lambda item: (_worst_rank(item[1]), item[0]))
    out += [family_section(family, sorted(rows, key=lambda r: (compare.rank(r.verdict), r.key)), records)
            for family, rows in families]
    out.append(f"<h2>Run</h2><p>Expectations: {escape(shown.evidence)}.</p>")
    out.append('<div class="facts">' + two_columns("run", shown.facts + shown.platform)
               + (two_columns("tunables", shown.tunables) if shown.tunables else "") + "</div>")
    return page(shown.title, "\n".join(out), script=REPORT_SCRIPT)


def _records(data):
    observations = data.get("observations") if isinstance(data.get("observations"), dict) else {}
    return {view.text(k): v for k, v in observations.items() if isinstance(v, dict)}


def _worst_rank(rows):
    """Families with a problem first (mismatches before errors), then the rest by name."""
    verdicts = {r.verdict for r in rows}
    return next((i for i, v in enumerate(compare.PROBLEMS) if v in verdicts), len(compare.PROBLEMS))


def attention(all_rows, limit=30):
    """One line naming every key that went wrong, each a link to its row."""
    problems = [r for r in all_rows if r.verdict in compare.PROBLEMS]
    if not problems:
        return '<p class="attention">Every key measured matched its table or has no expectation.</p>'
    rank = {v: i for i, v in enumerate(compare.PROBLEMS)}
    problems.sort(key=lambda r: (rank[r.verdict], r.key))
    items = [f'<a class="key" href="#{escape(anchor(r.key))}"><code>{escape(r.key)}</code></a> '
             f'{badge(r.verdict)}' for r in problems[:limit]]
    more = f" and {len(problems) - limit} more" if len(problems) > limit else ""
    return f'<p class="attention"><strong>What went wrong:</strong> {" · ".join(items)}{more}</p>'


def verdict_filter(counts, total):
    boxes = "".join(f'<label><input type="checkbox" class="verdict-filter" value="{escape(v)}" checked> '
                    f'{badge(v, n)}</label>' for v, n in counts)
    problems = ",".join(v for v, _ in counts if v in compare.PROBLEMS)
    quick = (f'<a href="#verdict={escape(problems)}">only problems</a> · ' if problems else "") \
        + '<a href="#all">everything</a>'
    return (f'<div class="filter"><span>Show:</span>{boxes}<span>{quick}</span>'
            f'<span id="shown">{total} keys shown</span></div>')


def family_section(family, rows, records):
    counts = ", ".join(f"{n} {label(v)}" for v, n in counts_of(rows))
    problem = any(r.verdict in compare.PROBLEMS for r in rows)
    opened = " open data-open" if problem else ""
    return (f'<details class="family" id="family-{escape(view.text(family))}"{opened}>'
            f"<summary><h2>{escape(family)} · {len(rows)} keys: {escape(counts)}</h2></summary>"
            '<table class="report"><thead><tr><th>key</th><th>observed</th><th>expected</th>'
            "<th>verdict</th><th>source</th></tr></thead><tbody>"
            + "".join(report_row(r, records.get(r.key, {})) for r in rows)
            + "</tbody></table></details>")


def expected_cell(r):
    """The expected value, and the rule when it says more; for a row that could not be
    judged (an error) the rule itself, so every row with a rule shows what was expected."""
    if r.expected:
        out = f'<span class="value">{escape(r.expected)}</span>'
        if r.rule and not r.rule.startswith(("expect:", "expect_null")):
            out += sub(r.rule)
        return out
    return f'<span class="value">{escape(r.rule)}</span>' if r.rule else ""


def report_row(r, record):
    if r.kind == "value":
        observed = f'<span class="value">{escape(r.observed)}</span>'
    elif r.kind == "unsupported":
        observed = '<span class="value">unsupported</span>'
    else:
        observed = f"<em>{escape(r.kind)}</em>: {escape(r.observed)}"
    observed += sub(r.error) + sub(r.detail)
    source = escape(r.ref) + (f" <em>({escape(r.evidence)})</em>" if r.evidence else "")
    reports = reports_of(r, record)
    if reports:
        source += f'<span class="sub">reported by {links(reports)}</span>'
    source += sub(r.note)
    if isinstance(record.get("held"), bool):     # a timing: did its loose claim hold?
        observed += sub("the claim held" if record["held"] else "the claim did not hold")
    target = anchor(r.key)
    return (f'<tr id="{escape(target)}" class="key {verdict_class(r.verdict)}" '
            f'data-key="{escape(r.key)}" data-verdict="{escape(r.verdict)}">'
            f'<td class="key"><a href="#{escape(target)}"><code>{escape(r.key)}</code></a></td>'
            f'<td class="kind-{escape(r.kind)}">{observed}</td><td>{expected_cell(r)}</td>'
            f'<td class="verdict">{badge(r.verdict, href="#" + target)}</td><td>{source}</td></tr>')


# --- the cross-platform matrix ---------------------------------------------------------------

def legend(items):
    return '<div class="legend"><strong>Colours:</strong>' + "".join(
        f'<span><span class="swatch {cls}">{escape(name)}</span> {escape(meaning)}</span>'
        for cls, name, meaning in items) + "</div>"


MATRIX_LEGEND = [
    ("v-match", "match", "as this platform's table expects"),
    ("v-mismatch", "mismatch", "not what its own table expects"),
    ("v-error", "error", "could not be measured or judged (message on hover)"),
    ("v-timeout", "timeout", "the probe ran out of time"),
    ("v-no-expectation", "no expectation", "its table has no rule for the key"),
    ("v-missing", "—", "this run did not measure the key"),
]


def matrix(m, different_only=False):
    title = f"ipcmatrix compare: {len(m.columns)} runs"
    out = [f"<h1>{escape(title)}</h1>", f"<p><strong>{escape(m.headline())}</strong>; "
           f"{len(m.with_problems)} keys do not match some run's own table.</p>"]
    out += [f'<div class="warning">{escape(w)}</div>' for w in m.warnings]
    out.append(grid_table(m))
    differing = f"; tunables that differ: {', '.join(name for name, _ in m.tunables)}" if m.tunables else ""
    out.append(f"<details><summary><strong>Runs</strong>: report files, tables, start times, kit, "
               f"evidence{escape(differing)}</summary>" + runs_table(m) + "</details>")
    out.append(legend(MATRIX_LEGEND + [("differs-mark", "▌", "a row whose results differ between "
                                                             "the runs (bold: unlike most runs; see its note)")]))
    checked = " checked" if different_only else ""
    out.append('<div class="filter"><span>Show only keys that:</span>'
               f'<label><input type="checkbox" class="row-filter" id="only-different" '
               f'value="differs"{checked}> differ across runs</label>'
               '<label><input type="checkbox" class="row-filter" id="only-problems" value="problem">'
               " do not match a run's own table</label>"
               f'<span id="shown">{len(m.rows)} keys shown</span>'
               '<span><a href="#differs">link: differing keys</a> · <a href="#all">all keys</a></span>'
               "</div>")
    out.append('<table class="matrix"><thead><tr><th class="key">key</th>'
               + "".join(f"<th>{c.number}: {escape(c.label)}</th>" for c in m.columns)
               + "</tr></thead>")
    for family, rows in m.families.items():
        out.append(f'<tbody class="family" id="family-{escape(view.text(family))}" '
                   f'data-family="{escape(family)}">'
                   f'<tr class="family-head"><th colspan="{len(m.columns) + 1}">{escape(family)}'
                   "</th></tr>")
        out += [matrix_row(r) for r in rows]
        out.append("</tbody>")
    out.append("</table>")
    if m.notes:
        out.append('<h2>Notes</h2><ol class="notes">')
        for note in m.notes:
            lines = "".join(f"<li>{escape(line)}</li>" for line in note.lines)
            out.append(f'<li id="note-{note.number}"><a class="key" href="#{escape(anchor(note.key))}">'
                       f"<code>{escape(note.key)}</code></a><ul>{lines}</ul></li>")
        out.append("</ol>")
    return page(title, "\n".join(out), script=MATRIX_SCRIPT)


def grid_table(m):
    """Families × runs, wpt.fyi style: keys without a problem / keys measured."""
    head = "".join(f"<th>{c.number}: {escape(c.label)}</th>" for c in m.columns)
    body = []
    for family, tallies in m.grid.items():
        cells = "".join(f'<td class="{verdict_class(t.worst)}" title="{escape(t.breakdown())}">'
                        f'<a href="#family-{escape(view.text(family))}">{escape(t.text())}</a></td>'
                        for t in tallies)
        body.append(f'<tr><th><a href="#family-{escape(view.text(family))}">{escape(family)}</a></th>'
                    f"{cells}</tr>")
    return ('<table class="grid"><caption>Keys without a problem / keys measured, per family'
            f'</caption><thead><tr><th>family</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def runs_table(m):
    rows = [("platform", [c.label for c in m.columns])]
    for index, (name, _) in enumerate(m.columns[0].facts):
        rows.append((name, [c.facts[index][1] if index < len(c.facts) else "" for c in m.columns]))
    rows.append(("kit", [c.kit for c in m.columns]))
    kinds = sorted({kind for c in m.columns for kind in c.evidence},
                   key=lambda k: (("observed", "reported", "source").index(k)
                                  if k in ("observed", "reported", "source") else 3, k))
    rows.append((f"expectations {' / '.join(kinds)}",
                 [" / ".join(str(c.evidence.get(k, 0)) for k in kinds) for c in m.columns]))
    rows += [(name, values) for name, values in m.tunables]
    body = "".join(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{escape(v)}</td>" for v in values)
                   + "</tr>" for name, values in rows)
    head = "".join(f"<th>{c.number}</th>" for c in m.columns)
    return f'<table class="runs"><thead><tr><th>run</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def matrix_row(r):
    target = anchor(r.key)
    key = f'<a href="#{escape(target)}"><code>{escape(r.key)}</code></a>'
    if r.differs:
        key += f' <a href="#note-{r.note}"><sup>{r.note}</sup></a>'
    cells = "".join(matrix_cell(c) for c in r.cells)
    classes = ["key", "differs" if r.differs else "same"] + (["problem"] if r.problem else [])
    return (f'<tr id="{escape(target)}" class="{" ".join(classes)}" data-key="{escape(r.key)}">'
            f'<td class="key">{key}</td>{cells}</tr>')


def matrix_cell(c):
    verdict = "missing" if c.kind == compare.MISSING else c.verdict
    classes = ["cell", verdict_class(verdict), f"kind-{escape(c.kind)}"]
    if c.odd:
        classes.append("odd")
    tip = [label(verdict)]
    if c.kind == compare.MISSING:
        content = "—"
    elif c.kind in ("error", "timeout"):
        content = f"<em>{escape(c.kind)}</em>" + sub(view.shorten(c.text, 120))
        tip.append(c.text)
    else:
        content = f'<span class="value">{escape(c.text)}</span>'
        if c.error:
            content += sub(view.shorten(c.error, 120))
            tip.append(c.error)
    if c.expected and (c.mismatch or c.kind in ("error", "timeout")):
        content += sub(f"expected {c.expected}")
    if c.expected:
        tip.append(f"expected {c.expected}")
    if verdict not in VERDICT_COLOURS:
        content += sub(f"verdict: {verdict}")
    return f'<td class="{" ".join(classes)}" title="{escape("; ".join(tip))}">{content}</td>'


# --- the expected-behaviour matrix (tables only) -----------------------------------------------

EVIDENCE_LEGEND = [
    ("e-observed", "observed", "measured by a run of this kit on a real machine"),
    ("e-reported", "reported", "seen on a real machine by another project (links)"),
    ("e-source", "source", "derived from the platform's code or documentation only"),
    ("", "—", "the table has no expectation for the key"),
    ("differs-mark", "▌", "a key whose expectations differ between platforms (or releases)"),
]


def evidence_class(kind):
    return f"e-{kind}" if kind in EVIDENCE_COLOURS else ""


def expected_matrix(em):
    from ipcmatrix import matrix as expected
    title = f"ipcmatrix: expected behaviour on {len(em.columns)} platforms"
    out = [f"<h1>{escape(title)}</h1>", f"<p><strong>{escape(em.headline())}</strong>. "
           "From the expectation tables alone: what each platform is expected to do, why, and "
           "how sure the kit is. Hover a cell for its ref and note.</p>"]
    out.append(legend(EVIDENCE_LEGEND))
    out.append('<div class="filter"><span>Show only keys that:</span>'
               '<label><input type="checkbox" class="row-filter" id="only-different" value="differs">'
               " differ across platforms</label>"
               f'<span id="shown">{len(em.rows)} keys shown</span>'
               '<span><a href="#differs">link: differing keys</a> · <a href="#all">all keys</a></span>'
               "</div>")
    heads = []
    for c in em.columns:
        counts = ", ".join(f"{n} {kind}" for kind, n in expected.evidence_kinds(c.evidence)) \
            or "no entries yet"
        variants = f"; own entries for {', '.join(c.conditions)}" if c.conditions else ""
        heads.append(f"<th>{escape(c.label)}{sub(c.path + ': ' + counts + variants)}</th>")
    out.append('<table class="matrix expected"><thead><tr><th class="key">key</th>'
               + "".join(heads) + "</tr></thead>")
    for family, rows in em.families.items():
        out.append(f'<tbody class="family" id="family-{escape(view.text(family))}">'
                   f'<tr class="family-head"><th colspan="{len(em.columns) + 1}">{escape(family)}'
                   "</th></tr>")
        out += [expected_row(r) for r in rows]
        out.append("</tbody>")
    out.append("</table>")
    return page(title, "\n".join(out), script=MATRIX_SCRIPT)


def expected_row(r):
    target = anchor(r.key)
    key = f'<a href="#{escape(target)}" title="{escape(r.claim)}"><code>{escape(r.key)}</code></a>'
    classes = ["key", "differs" if r.differs else "same"]
    return (f'<tr id="{escape(target)}" class="{" ".join(classes)}" data-key="{escape(r.key)}">'
            f'<td class="key">{key}</td>' + "".join(expected_cell_html(cell) for cell in r.cells)
            + "</tr>")


def expected_cell_html(variants):
    if not variants:
        return '<td class="cell none" title="no expectation">—</td>'
    parts = []
    for v in variants:
        tip = "; ".join(t for t in (f"ref: {v.ref}" if v.ref else "", v.note,
                                   f"observed on: {v.observed_on}" if v.observed_on else "") if t)
        when = f'<span class="when">{escape("on " + v.when)}: </span>' if v.when else ""
        evidence = f' <span class="evidence {evidence_class(v.evidence)}">{escape(v.evidence or "evidence not stated")}</span>'
        reported = f'<span class="sub">reported by {links(v.reported_by)}</span>' if v.reported_by else ""
        parts.append(f'<div class="variant {evidence_class(v.evidence)}" title="{escape(tip)}">'
                     f'{when}<span class="value">{escape(v.rule)}</span>{evidence}{reported}</div>')
    return f'<td class="cell">{"".join(parts)}</td>'
