"""Markdown for GitHub: the per-platform report, the cross-platform matrix, the step summary.

Every piece of a report is untrusted text.  Values go into code spans (where nothing is
markup) with ``|`` escaped so a cell stays a cell; free text (refs, notes, errors) has
every character that could start markup, HTML or an entity backslash-escaped; text in
the few HTML elements we write ourselves (``<details>``) is HTML-escaped.
"""
from __future__ import annotations

import html
import re
from collections import Counter

from ipcmatrix import view
from ipcmatrix.report import runnable

STEP_SUMMARY_LIMIT = 512 * 1024     # GitHub refuses a step's summary above 1 MiB
BADGES = {"match": "✅ match", "mismatch": "❌ mismatch", "error": "⚠️ error",
          "timeout": "⏱️ timeout", "no-expectation": "➖ no expectation"}
KIND_MARKS = {"error": "⚠️ error", "timeout": "⏱️ timeout", "missing": "—"}
_MARKUP = re.compile(r"([\\`*_\[\]<>|&~!#$])")


def escape(text):
    """Free text that renders as itself, inline, in a paragraph or a table cell."""
    return _MARKUP.sub(r"\\\1", " ".join(str(text).split()))


def code(text):
    """An inline code span holding ``text`` literally, safe inside a table cell."""
    text = " ".join(str(text).splitlines()).replace("|", "\\|")
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def counts_line(counts):
    return " · ".join(f"**{n}** {BADGES.get(verdict, escape(verdict))}" for verdict, n in counts) \
        or "nothing was measured"


def alert(kind, text, command=""):
    return [f"> [!{kind}]", f"> {escape(text)}", *([f"> {code(command)}"] if command else []), ""]


# --- the per-platform report -------------------------------------------------------------

def report(data, source="", level=1):
    """The report as Markdown: platform and tunables, then each family, mismatches first."""
    shown = view.report_view(data, source)
    h = "#" * level
    lines = [f"{h} {escape(shown.title)}", "", counts_line(shown.counts), "",
             f"Expectations: {escape(shown.evidence)}.", ""]
    for warning, command in shown.warnings:
        lines += alert("WARNING", warning, command)
    lines += facts_lines(shown)
    for family, rows in shown.families.items():
        lines += family_section(family, rows, level + 1)
    return "\n".join(lines) + "\n"


def facts_lines(shown):
    """The run's facts and platform, then its tunables, as tables."""
    lines = [*table(["run", ""], [[escape(n), escape(v)] for n, v in shown.facts + shown.platform]), ""]
    if shown.tunables:
        lines += [*table(["tunable", "value"], [[code(n), code(v)] for n, v in shown.tunables]), ""]
    return lines


def family_section(family, rows, level):
    title = f"{family} · {len(rows)} keys: " + ", ".join(
        f"{n} {verdict}" for verdict, n in view.verdict_counts(rows))
    body = table(["key", "observed", "expected", "verdict", "source"], [report_cells(r) for r in rows])
    if all(r.verdict == "match" for r in rows):
        # Families with nothing to look at fold away; problems stay in view.
        return [f"<details><summary>{html.escape(title)}</summary>", "", *body, "", "</details>", ""]
    return [f"{'#' * level} {escape(title)}", "", *body, ""]


def observed_cell(r):
    if r.kind == "value":
        cell = code(r.observed)
    elif r.kind == "unsupported":
        cell = "*unsupported*"
    else:
        cell = f"{KIND_MARKS[r.kind]}: {escape(r.observed)}"
    if r.error:
        cell += f"<br><sub>{escape(r.error)}</sub>"
    if r.detail:
        cell += f"<br><sub>{escape(r.detail)}</sub>"
    return cell


def report_cells(r):
    expected = code(r.expected) if r.expected else ""
    if r.rule and not r.rule.startswith(("expect:", "expect_null")):
        expected += f"<br><sub>{escape(r.rule)}</sub>"
    source = escape(r.ref) + evidence_mark(r)
    if r.note:
        source += f"<br><sub>{escape(r.note)}</sub>"
    return [code(r.key), observed_cell(r), expected, BADGES.get(r.verdict, escape(r.verdict)), source]


def evidence_mark(r):
    """`` *(source)*``, `` *(observed)*``, or `` *(reported by* [link](url) *on macOS 15)*``."""
    if not r.evidence:
        return ""
    if not r.reported_by:
        return f" *({escape(r.evidence)})*"
    links = ", ".join((f"[{escape(link)}]({url})" if url else code(link))
                      + (f" on {escape(on)}" if on else "") for link, url, on in r.reported_by)
    return f" *({escape(r.evidence)}, reported by* {links}*)*"


# --- the cross-platform matrix -----------------------------------------------------------

# A cell's mark says its verdict against its own run's table; a verdict the kit does not
# know (a newer kit's) is shown by name.
VERDICT_MARKS = {"match": "✅", "mismatch": "❌", "error": "⚠️", "timeout": "⏱️",
                 "no-expectation": "➖", "timing": "ℹ️", "missing": "—"}


def verdict_mark(verdict):
    return VERDICT_MARKS.get(verdict) or f"({escape(verdict or 'no verdict')})"


def matrix(m, different_only=False):
    """The matrix as Markdown; ``different_only`` keeps only the keys that differ."""
    lines = [f"# ipcmatrix compare: {len(m.columns)} runs", "", f"**{escape(m.headline())}**; "
             f"{len(m.with_problems)} keys do not match some run's own table.", ""]
    for warning in m.warnings:
        lines += alert("WARNING", warning)
    lines += grid_lines(m.grid, [f"{c.number}: {escape(c.label)}" for c in m.columns], link=True)
    lines.append("")
    lines += runs_table(m)
    lines += ["", "Marks: ✅ matches its own table · ❌ does not · ⚠️ error · ⏱️ timeout · "
              "➖ no expectation · ℹ️ a timing (never fails a run) · — not measured; **bold**: a row whose results differ between "
              "the runs, with its note.", ""]
    shown_any = False
    for family, rows in m.families.items():
        rows = [r for r in rows if r.differs or not different_only]
        if not rows:
            continue
        shown_any = True
        lines += [f"## {escape(family)}", ""]
        lines += table(["key", *(f"{c.number}: {escape(c.label)}" for c in m.columns)],
                       [matrix_cells(r) for r in rows])
        lines.append("")
    if not shown_any:
        lines += ["No key differs between these runs." if different_only else "No keys.", ""]
    if m.notes:
        lines += ["## Notes", ""]
        for note in m.notes:
            lines.append(f"{note.number}. {code(note.key)}")
            lines += [f"   - {escape(line)}" for line in note.lines]
        lines.append("")
    return "\n".join(lines)


def grid_lines(grid, headers, link=False):
    """Families × runs, wpt.fyi style: keys without a problem / keys measured; ``link``
    makes each family a link to its section (GitHub's anchor for ``## dgram``)."""
    def name(family):
        plain = re.fullmatch(r"[a-z0-9_-]+", family)
        return f"[{escape(family)}](#{family})" if link and plain else escape(family)
    body = [[name(family), *(f"{verdict_mark(t.worst)} {t.text()}" for t in tallies)]
            for family, tallies in grid.items()]
    return ["Keys without a problem / keys measured, per family:", "",
            *table(["family", *headers], body)]


def runs_table(m):
    body = [["platform", *(f"**{escape(c.label)}**" for c in m.columns)]]
    for index, (name, _) in enumerate(m.columns[0].facts):
        body.append([escape(name), *(escape(c.facts[index][1]) if index < len(c.facts) else ""
                                     for c in m.columns)])
    body.append(["kit", *(escape(c.kit) for c in m.columns)])
    kinds = [k for k in ("observed", "reported", "source") if any(k in c.evidence for c in m.columns)]
    kinds += sorted({k for c in m.columns for k in c.evidence} - set(kinds))
    body.append([f"expectations {' / '.join(kinds)}",
                 *(" / ".join(str(c.evidence.get(k, 0)) for k in kinds) for c in m.columns)])
    body += [[code(name), *(code(v) for v in values)] for name, values in m.tunables]
    return table(["run", *(str(c.number) for c in m.columns)], body)


def matrix_cells(r):
    key = f"**{code(r.key)}** <sup>{r.note}</sup>" if r.differs else code(r.key)
    return [key, *(matrix_cell(c) for c in r.cells)]


def matrix_cell(c):
    if c.kind == "missing":
        return "—"
    if c.kind == "value":
        cell = code(c.text)
    elif c.kind == "unsupported":
        cell = "*unsupported*"
    else:
        cell = f"{c.kind}: {escape(view.shorten(c.text, 120))}"
    if c.odd:
        cell = f"**{cell}**"
    cell = f"{verdict_mark(c.verdict)} {cell}"
    if c.expected and (c.mismatch or c.kind in ("error", "timeout")):
        cell += f" (expected {code(c.expected)})"
    return cell


# --- the expected-behaviour matrix (tables only) -------------------------------------------

def expected_matrix(em):
    """What each platform's table expects of each key, with the evidence behind it."""
    from ipcmatrix import matrix as expected
    lines = [f"# ipcmatrix: expected behaviour on {len(em.columns)} platforms", "",
             f"**{escape(em.headline())}**", "",
             "Evidence: *observed* by a run of this kit on a real machine, *reported* by another "
             "project on a real machine, *source* derived from code or documentation only.", ""]
    lines += table(["platform", "table", "expectations", "entries for some releases only"],
                   [[escape(c.label), code(c.path),
                     ", ".join(f"{n} {escape(k)}" for k, n in expected.evidence_kinds(c.evidence)),
                     ", ".join(code(w) for w in c.conditions)] for c in em.columns])
    lines.append("")
    for family, rows in em.families.items():
        lines += [f"## {escape(family)}", ""]
        lines += table(["key", *(escape(c.label) for c in em.columns)],
                       [[f"**{code(r.key)}**" if r.differs else code(r.key),
                         *(expected_cell(cell) for cell in r.cells)] for r in rows])
        lines.append("")
    return "\n".join(lines)


def expected_cell(variants):
    if not variants:
        return "—"
    parts = []
    for v in variants:
        part = (f"{code(v.when)}: " if v.when else "") + f"{code(v.rule)} *({escape(v.evidence)})*"
        if v.reported_by:
            part += " reported by " + ", ".join(
                (f"[{escape(link)}](<{url}>)" if url else code(link)) + (f" on {escape(on)}" if on else "")
                for link, url, on in v.reported_by)
        parts.append(part)
    return "<br>".join(parts)


# --- GitHub Actions step summary ----------------------------------------------------------

def failure_cells(r):
    """A failure's row; one that could not be judged shows the rule it was held to."""
    cells = report_cells(r)
    if not r.expected and r.rule:
        cells[2] = code(r.rule)
    return cells


def step_summary(data, report_path=None, limit=STEP_SUMMARY_LIMIT, tables=None):
    """The run for ``$GITHUB_STEP_SUMMARY``: what went wrong first, then the families ×
    verdicts grid, then the run's facts and every family; cut to ``limit`` bytes."""
    from ipcmatrix import compare
    if data.get("unknown_platform"):
        data = {**data, "unknown_platform": runnable(data["unknown_platform"], report_path, tables)}
    shown = view.report_view(data)
    all_rows = [r for rows in shown.families.values() for r in rows]
    problems = [r for r in all_rows if r.verdict in compare.PROBLEMS]
    rank = {v: i for i, v in enumerate(compare.PROBLEMS)}
    problems.sort(key=lambda r: (rank[r.verdict], r.key))
    counts = compare.ordered(Counter(r.verdict for r in all_rows))   # new verdicts too
    lines = [f"## {escape(shown.title)}", "", counts_line(counts), ""]
    for warning, command in shown.warnings:
        lines += alert("WARNING", warning, command)
    if problems:
        lines += [f"### What went wrong: {len(problems)} keys", ""]
        lines += table(["key", "observed", "expected", "verdict", "source"],
                       [failure_cells(r) for r in problems])
    else:
        lines.append("Every key measured matched its table or has no expectation.")
    lines.append("")
    lines += grid_lines(compare.grid([("", data)]), ["this run"])
    lines += ["", f"Expectations: {escape(shown.evidence)}.", "", *facts_lines(shown)]
    for family, rows in shown.families.items():
        lines += family_section(family, rows, 3)
    text = "\n".join(lines) + "\n"
    if report_path:
        text += f"\nFull report: {code(str(report_path))}\n"
    return truncate(text, limit, report_path)


def truncate(text, limit, report_path=None):
    """``text`` if it fits in ``limit`` UTF-8 bytes, else its first lines and a note."""
    size = len(text.encode("utf-8"))
    if size <= limit:
        return text
    where = f" in {code(str(report_path))}" if report_path else " in the JSON report"
    budget = max(0, limit - 1024)
    kept, used = [], 0
    for line in text.splitlines(keepends=True):
        used += len(line.encode("utf-8"))
        if used > budget:
            break
        kept.append(line)
    opened = sum(line.count("<details") - line.count("</details>") for line in kept)
    closing = ["\n</details>\n"] * max(0, opened)
    note = (f"\n> [!NOTE]\n> Truncated: this summary shows the first {used // 1024} KiB of "
            f"{size // 1024} KiB; the full report is{where}.\n")
    return "".join(kept) + "".join(closing) + note


def append_step_summary(data, report_path=None, tables=None):
    """On GitHub Actions, append the run to ``$GITHUB_STEP_SUMMARY``; the error, or ""."""
    import os
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return ""
    try:
        with open(summary, "a", encoding="utf-8") as out:
            out.write("\n" + step_summary(data, report_path=report_path, tables=tables))
    except OSError as exc:
        return f"could not append to GITHUB_STEP_SUMMARY ({summary}): {exc}"
    return ""
