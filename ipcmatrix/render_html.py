"""One self-contained HTML file per report or matrix: no network, no external assets.

Every piece of a report is HTML-escaped (text and attributes).  As a second line of
defence each page carries a Content-Security-Policy that allows only its own inline
style and script, by hash: even markup that slipped through could not load or run
anything.  The matrix's only script is the "only keys that differ" filter, which a
``#different`` fragment in the URL also turns on.
"""
from __future__ import annotations

import base64
import hashlib
from html import escape

from ipcmatrix import view

STYLE = """
:root { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; }
body { margin: 1.5em auto; max-width: 1400px; padding: 0 1em; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code, .value { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em;
  white-space: pre-wrap; overflow-wrap: break-word; }
.facts { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
td.key code { white-space: nowrap; word-break: normal; }
.badge { display: inline-block; padding: .1em .6em; border-radius: 1em; margin-right: .4em;
  font-weight: 600; }
.sub { color: #59636e; font-size: .88em; display: block; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: .5em .8em; margin: .5em 0; }
.v-match { background: #dafbe1; } .v-mismatch { background: #ffcecb; }
.v-error { background: #ffe2b8; } .v-timeout { background: #e8dcff; }
.v-no-expectation { background: #eaeef2; }
tr.v-match td.verdict { color: #1a7f37; } tr.v-mismatch td.verdict { color: #cf222e; font-weight: 700; }
tr.family-head th { background: #eaeef2; font-size: 1.05em; }
tr.differs td:first-child { border-left: 4px solid #bf8700; }
td.kind-error, td.kind-timeout { font-style: italic; }
td.kind-unsupported { font-style: italic; color: #59636e; }
td.kind-missing { color: #8c959f; text-align: center; }
tr.differs td.g0 { background: #ddf4ff; } tr.differs td.g1 { background: #fff1e5; }
tr.differs td.g2 { background: #fbefff; } tr.differs td.g3 { background: #dafbe1; }
tr.differs td.g4 { background: #fff8c5; } tr.differs td.g5 { background: #ffebe9; }
td.odd { font-weight: 700; }
td.mismatch::after { content: " ≠"; color: #cf222e; font-weight: 700; }
.filter { margin: .8em 0; padding: .5em .8em; background: #f6f8fa; border: 1px solid #d0d7de;
  display: inline-block; }
ol.notes li { margin-bottom: .5em; }
"""

FILTER_SCRIPT = """
(function () {
  "use strict";
  var box = document.getElementById("only-different");
  var shown = document.getElementById("shown");
  function apply() {
    var only = box.checked, count = 0;
    document.querySelectorAll("tbody.family").forEach(function (body) {
      var visible = 0;
      body.querySelectorAll("tr.key").forEach(function (row) {
        var hide = only && !row.classList.contains("differs");
        row.hidden = hide;
        if (!hide) { visible += 1; }
      });
      body.hidden = visible === 0;
      count += visible;
    });
    shown.textContent = count + (count === 1 ? " key shown" : " keys shown");
  }
  function fromFragment() {
    if (location.hash === "#different") { box.checked = true; }
    else if (location.hash === "#all") { box.checked = false; }
    apply();
  }
  box.addEventListener("change", function () {
    location.hash = box.checked ? "different" : "all";
    apply();
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


def badges(counts):
    return " ".join(f'<span class="badge v-{escape(verdict)}">{n} {escape(verdict)}</span>'
                    for verdict, n in counts) or "nothing was measured"


def two_columns(header, rows, cls=""):
    body = "".join(f"<tr><th>{escape(n)}</th><td><code>{escape(v)}</code></td></tr>" for n, v in rows)
    return f'<table class="{cls}"><thead><tr><th colspan="2">{escape(header)}</th></tr></thead>' \
           f"<tbody>{body}</tbody></table>"


def sub(text):
    return f'<span class="sub">{escape(text)}</span>' if text else ""


# --- the per-platform report ---------------------------------------------------------------

def report(data, source=""):
    shown = view.report_view(data, source)
    out = [f"<h1>{escape(shown.title)}</h1>", f"<p>{badges(shown.counts)}</p>",
           f"<p>Expectations: {escape(shown.evidence)}.</p>"]
    out += [f'<div class="warning">{escape(w)}' + (f" <code>{escape(c)}</code>" if c else "") + "</div>"
            for w, c in shown.warnings]
    out.append('<div class="facts">' + two_columns("run", shown.facts + shown.platform)
               + (two_columns("tunables", shown.tunables) if shown.tunables else "") + "</div>")
    for family, rows in shown.families.items():
        counts = ", ".join(f"{n} {verdict}" for verdict, n in view.verdict_counts(rows))
        out.append(f"<section><h2>{escape(family)} · {len(rows)} keys: {escape(counts)}</h2>")
        out.append("<table><thead><tr><th>key</th><th>observed</th><th>expected</th>"
                   "<th>verdict</th><th>source</th></tr></thead><tbody>")
        out += [report_row(r) for r in rows]
        out.append("</tbody></table></section>")
    return page(shown.title, "\n".join(out))


def report_row(r):
    if r.kind == "value":
        observed = f'<span class="value">{escape(r.observed)}</span>'
    else:
        observed = f"<em>{escape(r.kind)}</em>"
        if r.kind != "unsupported":
            observed += f": {escape(r.observed)}"
    observed += sub(r.error) + sub(r.detail)
    expected = (f'<span class="value">{escape(r.expected)}</span>' if r.expected else "")
    if r.rule and not r.rule.startswith(("expect:", "expect_null")):
        expected += sub(r.rule)
    source = escape(r.ref) + (f" <em>({escape(r.evidence)})</em>" if r.evidence else "") + sub(r.note)
    return (f'<tr class="v-{escape(r.verdict)}" data-key="{escape(r.key)}">'
            f'<td class="key"><code>{escape(r.key)}</code></td>'
            f'<td class="kind-{r.kind}">{observed}</td><td>{expected}</td>'
            f'<td class="verdict">{escape(r.verdict)}</td><td>{source}</td></tr>')


# --- the cross-platform matrix ---------------------------------------------------------------

def matrix(m, different_only=False):
    title = f"ipcmatrix compare: {len(m.columns)} runs"
    out = [f"<h1>{escape(title)}</h1>", f"<p><strong>{escape(m.headline())}</strong></p>"]
    out += [f'<div class="warning">{escape(w)}</div>' for w in m.warnings]
    out.append(runs_table(m))
    checked = " checked" if different_only else ""
    out.append(f'<p class="filter"><label><input type="checkbox" id="only-different"{checked}> '
               f'only keys that differ</label> · <span id="shown">{len(m.rows)} keys shown</span>'
               ' · <a href="#different">link to this view</a></p>')
    out.append('<table class="matrix"><thead><tr><th>key</th>'
               + "".join(f"<th>{c.number}: {escape(c.label)}</th>" for c in m.columns)
               + "</tr></thead>")
    for family, rows in m.families.items():
        out.append(f'<tbody class="family" data-family="{escape(family)}">'
                   f'<tr class="family-head"><th colspan="{len(m.columns) + 1}">{escape(family)}'
                   "</th></tr>")
        out += [matrix_row(r) for r in rows]
        out.append("</tbody>")
    out.append("</table>")
    if m.notes:
        out.append('<h2>Notes</h2><ol class="notes">')
        for note in m.notes:
            lines = "".join(f"<li>{escape(line)}</li>" for line in note.lines)
            out.append(f'<li id="note-{note.number}"><code>{escape(note.key)}</code>'
                       f"<ul>{lines}</ul></li>")
        out.append("</ol>")
    return page(title, "\n".join(out), script=FILTER_SCRIPT)


def runs_table(m):
    rows = [("platform", [c.label for c in m.columns])]
    for index, (name, _) in enumerate(m.columns[0].facts):
        rows.append((name, [c.facts[index][1] if index < len(c.facts) else "" for c in m.columns]))
    rows.append(("kit", [c.kit for c in m.columns]))
    rows.append(("expectations observed / source",
                 [f"{c.evidence['observed']} / {c.evidence['source']}" for c in m.columns]))
    rows += [(name, values) for name, values in m.tunables]
    body = "".join(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{escape(v)}</td>" for v in values)
                   + "</tr>" for name, values in rows)
    head = "".join(f"<th>{c.number}</th>" for c in m.columns)
    return f'<table class="runs"><thead><tr><th>run</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def matrix_row(r):
    key = f"<code>{escape(r.key)}</code>"
    if r.differs:
        key += f' <a href="#note-{r.note}"><sup>{r.note}</sup></a>'
    cells = "".join(matrix_cell(c) for c in r.cells)
    return (f'<tr class="key {"differs" if r.differs else "same"}" data-key="{escape(r.key)}">'
            f'<td class="key">{key}</td>{cells}</tr>')


def matrix_cell(c):
    classes = [f"kind-{c.kind}"]
    if c.group is not None:
        classes.append(f"g{c.group % 6}")
    if c.odd:
        classes.append("odd")
    if c.mismatch:
        classes.append("mismatch")
    title = f' title="expected {escape(c.expected)}"' if c.mismatch and c.expected else ""
    content = f'<span class="value">{escape(c.text)}</span>' if c.kind == "value" else escape(
        c.kind if c.kind != "missing" else "—")
    return f'<td class="{" ".join(classes)}"{title}>{content}</td>'
