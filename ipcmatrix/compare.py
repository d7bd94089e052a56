"""The cross-platform matrix: one row per key, one column per run, differences explained.

Each cell carries its run's verdict against that platform's own table (match, mismatch,
error, ...), so colour can say good or bad; whether a row *differs* across the runs is a
separate fact with its own filter.  ``grid`` counts each family's keys per run, wpt.fyi
style ("dgram 21/23"), for the summary on top of the matrix and of a run's step summary.

A row *differs* when the runs that measured the key did not all get the same result.
Results are compared as JSON (``true`` is not ``1``); an error or a timeout is a result
of its own, never equal to a value, and ``"unsupported"`` is a value like any other but
shown apart.  A key a run did not measure (it ran other families) is shown as missing
and does not make the row differ.  Each differing row gets a numbered note, caniuse
style: what its rule depends on that also differs between the runs, each run's rule,
note and ref, and any error message.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ipcmatrix import view
from ipcmatrix.platform import alias

MISSING = "missing"
# Verdicts that make a key a problem (fail a run); any other verdict, known or new, does not.
PROBLEMS = ("mismatch", "error", "timeout")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@dataclass
class Column:
    number: int
    label: str
    source: str
    kit: str
    evidence: dict
    facts: list


@dataclass
class Cell:
    kind: str                  # value | unsupported | error | timeout | missing
    text: str = ""             # the value, or the error message
    verdict: str = ""
    expected: str = ""         # the expected value, or the rule when none was worked out
    error: str = ""            # an error beside a value (the expected value failed)
    group: int | None = None   # cells with the same result share a group
    odd: bool = False          # differs from the row's most common result

    @property
    def mismatch(self):
        return self.verdict == "mismatch"

    @property
    def problem(self):
        return self.verdict in PROBLEMS


@dataclass
class MatrixRow:
    key: str
    cells: list
    differs: bool = False
    note: int | None = None

    @property
    def problem(self):
        """Some run does not match its own table (or could not be judged)."""
        return any(c.problem for c in self.cells)


@dataclass
class Tally:
    """One family in one run: how many keys it measured and how many are not a problem."""
    counts: Counter = field(default_factory=Counter)   # verdict -> keys

    @property
    def total(self):
        return sum(self.counts.values())

    @property
    def passing(self):
        return self.total - sum(self.counts[v] for v in PROBLEMS)

    @property
    def worst(self):
        """The verdict that colours the cell: the first problem found, else match."""
        if not self.total:
            return MISSING
        return next((v for v in PROBLEMS if self.counts[v]), "match")

    def text(self):
        return f"{self.passing}/{self.total}" if self.total else "—"

    def breakdown(self):
        return ", ".join(f"{n} {verdict}" for verdict, n in ordered(self.counts)) or "not measured"


def rank(verdict):
    """Where a verdict sorts: the report's order, then verdicts it does not list (a timing,
    a newer kit's) after every problem and before the matches."""
    order = [v for v in view.VERDICT_ORDER if v != "match"]
    return order.index(verdict) if verdict in order else len(order) + (verdict == "match")


def ordered(counts):
    """(verdict, n) in the order of ``rank``, then by name."""
    return sorted(((v, n) for v, n in counts.items() if n), key=lambda item: (rank(item[0]), item[0]))


def grid(runs):
    """Family -> [Tally per run], from ``[(source, report), ...]``."""
    found = {}
    for index, (_, report) in enumerate(runs):
        for key, record in _observations(report).items():
            tallies = found.setdefault(view.family_of(key), [Tally() for _ in runs])
            tallies[index].counts[view.text(record.get("verdict"))] += 1
    return dict(sorted(found.items()))


@dataclass
class Note:
    number: int
    key: str
    lines: list = field(default_factory=list)


@dataclass
class Matrix:
    columns: list
    families: dict             # family -> [MatrixRow]
    notes: list
    warnings: list
    tunables: list             # (name, [text per column]) for tunables that differ
    grid: dict = field(default_factory=dict)   # family -> [Tally per column]

    @property
    def rows(self):
        return [r for family_rows in self.families.values() for r in family_rows]

    @property
    def differing(self):
        return [r for r in self.rows if r.differs]

    @property
    def with_problems(self):
        return [r for r in self.rows if r.problem]

    @property
    def partial(self):
        return [r for r in self.rows if any(c.kind == MISSING for c in r.cells)]

    def headline(self):
        compared = len(self.rows) - len([r for r in self.partial if not r.differs])
        line = f"{len(self.differing)} of {len(self.rows)} keys differ between these runs"
        if compared != len(self.rows):
            line += (f" ({len(self.rows) - compared} keys measured by only some runs are shown"
                     " but not compared)")
        return line


def matrix(runs):
    """Build the matrix from ``[(source, report), ...]`` (reports already read)."""
    if not runs:
        raise ValueError("compare needs at least one report")
    tunables = _differing_tunables(runs)
    columns = _columns(runs, tunables)
    records = [_observations(report) for _, report in runs]
    keys = sorted(set().union(*records))
    matrix_rows = [_row(key, records) for key in keys]
    notes, differing = [], {r.key for r in matrix_rows if r.differs}
    for r in matrix_rows:
        if r.differs:
            r.note = len(notes) + 1
            note = _note(r, [rec.get(r.key) for rec in records], tunables, differing)
            note.number = r.note
            notes.append(note)
    families = {}
    for r in matrix_rows:
        families.setdefault(view.family_of(r.key), []).append(r)
    return Matrix(columns=columns, families=families, notes=notes, warnings=_warnings(runs),
                  tunables=[(name, [view.show(v) if present else "—" for present, v in values])
                            for name, values in tunables.items()],
                  grid=grid(runs))


def _observations(report):
    observations = report.get("observations")
    if not isinstance(observations, dict):
        return {}
    return {view.text(k): v for k, v in observations.items() if isinstance(v, dict)}


def _result(record):
    """What is compared: the value, or the kind of failure (never its message).  A timing
    is compared by whether its claim held: its figures differ from run to run by noise."""
    if record.get("verdict") == "timing":
        return ("timing", bool(record.get("held")))
    if "value" in record:
        return ("value", view.canonical(record["value"]))
    return ("timeout",) if record.get("verdict") == "timeout" else ("error",)


def _row(key, records):
    cells, results = [], []
    for record in records:
        found = record.get(key)
        if found is None:
            cells.append(Cell(kind=MISSING, text="—"))
            results.append(None)
            continue
        shown = view.row(key, found)
        cells.append(Cell(kind=shown.kind, text=shown.observed, verdict=shown.verdict,
                          expected=shown.expected or shown.rule, error=shown.error))
        results.append(_result(found))
    present = [r for r in results if r is not None]
    order = list(dict.fromkeys(present))
    common = Counter(present).most_common(1)[0][0] if present else None
    differs = len(order) > 1
    for cell, result in zip(cells, results):
        if result is not None:
            cell.group = order.index(result)
            cell.odd = differs and result != common
    return MatrixRow(key=key, cells=cells, differs=differs)


def _differing_tunables(runs):
    """Tunable -> [(present, value) per run], for tunables whose values are not all equal."""
    values = {}
    for index, (_, report) in enumerate(runs):
        platform = report.get("platform") if isinstance(report.get("platform"), dict) else {}
        tunables = platform.get("tunables") if isinstance(platform.get("tunables"), dict) else {}
        for name, value in tunables.items():
            values.setdefault(view.text(name), [(False, None)] * len(runs))[index] = (True, value)
    return {name: found for name, found in sorted(values.items())
            if len({view.canonical(v) if present else None for present, v in found}) > 1}


def _columns(runs, tunables):
    labels = [view.platform_label(report.get("platform")) for _, report in runs]
    for label in {l for l in labels if labels.count(l) > 1}:
        same = [i for i, l in enumerate(labels) if l == label]
        for i in same:
            extra = [f"{alias(name)}={view.show(found[i][1])}" for name, found in tunables.items()
                     if len({view.canonical(found[j][1]) for j in same}) > 1]
            labels[i] = " ".join([label, *extra])
    for label in {l for l in labels if labels.count(l) > 1}:
        for n, i in enumerate([i for i, l in enumerate(labels) if l == label], start=1):
            labels[i] = f"{label} #{n}"
    columns = []
    for index, ((source, report), label) in enumerate(zip(runs, labels), start=1):
        kit = report.get("kit") if isinstance(report.get("kit"), dict) else {}
        platform = report.get("platform") if isinstance(report.get("platform"), dict) else {}
        facts = [("report", view.text(source)), ("table", view.text(report.get("table")) or "none"),
                 ("started", view.text(report.get("started"))),
                 ("python", view.text(platform.get("python")))]
        if report.get("complete") is False:
            facts.append(("complete", "no: the run was interrupted"))
        columns.append(Column(number=index, label=label, source=view.text(source),
                              kit=view.text(kit.get("version")) or "unknown",
                              evidence=view.evidence_counts(report), facts=facts))
    return columns


def _warnings(runs):
    found = []
    versions = [view.text((r.get("kit") or {}).get("version") if isinstance(r.get("kit"), dict)
                          else None) or "unknown" for _, r in runs]
    if len(set(versions)) > 1:
        listed = ", ".join(f"{v} in run {i}" for i, v in enumerate(versions, start=1))
        found.append(f"These reports come from different ipcmatrix versions ({listed}). Keys keep "
                     "their meaning, but probes and tables may have been fixed in between: a "
                     "difference may come from the kit rather than the platform.")
    for i, (_, report) in enumerate(runs, start=1):
        if report.get("complete") is False:
            found.append(f"Run {i} was interrupted: it holds only what was measured.")
    return found


def _note(matrix_row, records, tunables, differing):
    """The note of a differing row: why it may differ, each run's rule and ref, errors."""
    lines = []
    rules = " ".join(view.text(r.get("rule")) for r in records if r)
    words = set(_WORD.findall(rules))
    for name, found in tunables.items():
        if name in words or alias(name) in words:
            lines.append(f"depends on {name}, which differs: "
                         + ", ".join(f"{view.show(v) if present else '—'} in run {i}"
                                     for i, (present, v) in enumerate(found, start=1)))
    for key in sorted(words & differing - {matrix_row.key}):
        lines.append(f"follows {key}, which also differs")
    sources = {}
    for i, record in enumerate(records, start=1):
        if not record:
            continue
        basis = tuple(view.text(record.get(f)) for f in ("table", "rule", "note", "ref", "evidence"))
        if any(basis):
            sources.setdefault(basis, []).append(i)
    for (table, rule, note, ref, evidence), runs in sources.items():
        which = "run " + ", ".join(map(str, runs)) if len(runs) < len(records) else "every run"
        parts = [f"{which} ({table or 'no table'}): {rule or 'no rule'}"]
        if note:
            parts.append(note)
        if ref:
            parts.append(f"ref: {ref}" + (f" [{evidence}]" if evidence else ""))
        lines.append("; ".join(parts))
    for i, (record, cell) in enumerate(zip(records, matrix_row.cells), start=1):
        if cell.kind in ("error", "timeout"):
            lines.append(f"run {i}: {cell.kind}: {cell.text}")
        elif cell.mismatch:
            lines.append(f"run {i}: does not match its table (expected {cell.expected})")
    return Note(number=0, key=matrix_row.key, lines=lines)
