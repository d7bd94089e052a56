"""Markdown for GitHub: the per-platform report, the cross-platform matrix, the step summary.

Every piece of a report is untrusted text.  Values go into code spans (where nothing is
markup) with ``|`` escaped so a cell stays a cell; free text (refs, notes, errors) has
every character that could start markup, HTML or an entity backslash-escaped; text in
the few HTML elements we write ourselves (``<details>``) is HTML-escaped.
"""
from __future__ import annotations

import html
import re

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
    lines += table(["run", ""], [[escape(n), escape(v)] for n, v in shown.facts + shown.platform])
    lines.append("")
    if shown.tunables:
        lines += table(["tunable", "value"], [[code(n), code(v)] for n, v in shown.tunables])
        lines.append("")
    for family, rows in shown.families.items():
        lines += family_section(family, rows, level + 1)
    return "\n".join(lines) + "\n"


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

def matrix(m, different_only=False):
    """The matrix as Markdown; ``different_only`` keeps only the keys that differ."""
    lines = [f"# ipcmatrix compare: {len(m.columns)} runs", "", f"**{escape(m.headline())}**", ""]
    for warning in m.warnings:
        lines += alert("WARNING", warning)
    lines += runs_table(m)
    lines.append("")
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


def runs_table(m):
    body = [["platform", *(f"**{escape(c.label)}**" for c in m.columns)]]
    for index, (name, _) in enumerate(m.columns[0].facts):
        body.append([escape(name), *(escape(c.facts[index][1]) if index < len(c.facts) else ""
                                     for c in m.columns)])
    body.append(["kit", *(escape(c.kit) for c in m.columns)])
    body.append(["expectations observed / source",
                 *(f"{c.evidence['observed']} / {c.evidence['source']}" for c in m.columns)])
    body += [[code(name), *(code(v) for v in values)] for name, values in m.tunables]
    return table(["run", *(str(c.number) for c in m.columns)], body)


def matrix_cells(r):
    key = f"**{code(r.key)}** <sup>{r.note}</sup>" if r.differs else code(r.key)
    return [key, *(matrix_cell(c) for c in r.cells)]


def matrix_cell(c):
    if c.kind == "value":
        cell = code(c.text)
    elif c.kind == "unsupported":
        cell = "*unsupported*"
    else:
        cell = KIND_MARKS[c.kind]
    if c.odd:
        cell = f"**{cell}**"
    if c.mismatch:
        cell += " ≠"
    return cell


# --- GitHub Actions step summary ----------------------------------------------------------

def step_summary(data, report_path=None, limit=STEP_SUMMARY_LIMIT, tables=None):
    """The run's report for ``$GITHUB_STEP_SUMMARY``, cut to ``limit`` bytes with a note."""
    if data.get("unknown_platform"):
        data = {**data, "unknown_platform": runnable(data["unknown_platform"], report_path, tables)}
    text = report(data, level=2)
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
