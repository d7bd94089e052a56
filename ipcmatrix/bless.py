"""``ipcmatrix bless``: record what real runs observed in a platform's expectation table.

Conservative, like wpt's update-expectations and BCD's collector:
- a key whose table rule already holds on every run is left alone, except that an entry
  derived from source or reported by others (``evidence = "source"`` or ``"reported"``) is
  marked ``observed`` with the release and machine it was seen on (its ``reported_by`` links
  are kept); evidence only ever gets stronger: never ``observed`` or ``reported`` -> ``source``;
- a key with no entry gets one (``expect = <value>``, evidence ``observed``);
- an ``expect`` rule the runs contradict gets the observed value; its ref and note, and
  every comment, are kept;
- everything else is refused and explained, and then nothing is written: two reports that
  disagree on a key, a formula or range the value does not satisfy (a single value cannot
  replace a rule over tunables), an entry limited to other releases, a value that contradicts
  what others reported from a real machine (``evidence = "reported"``: one of the two is wrong,
  or the entry needs a release condition; a person decides).
The file is edited line by line, never regenerated, so its order and comments survive; the
result is checked (it loads, every blessed key now matches, nothing else moved, the run's
platform picks this table) before it atomically replaces the old file.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ipcmatrix import catalogue, expectations, rules, session, view
from ipcmatrix.platform import formula_names, version_tuple
from ipcmatrix.verdict import Names

# Evidence a run that agrees makes "observed"; "observed" itself is left as it is.
UPGRADABLE = ("source", "reported")
TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Refused(Exception):
    """Bless wrote nothing; ``problems`` says why, one line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NotRepresentable(ValueError):
    """A JSON value TOML cannot hold (null inside a list, a lone surrogate)."""


@dataclass
class Run:
    source: str
    report: dict

    @property
    def platform(self):
        return self.report["platform"]

    @property
    def release(self):
        return str(self.platform.get("release", ""))

    @property
    def machine(self):
        return str(self.platform.get("machine", ""))

    @property
    def label(self):
        kit = self.report.get("kit") if isinstance(self.report.get("kit"), dict) else {}
        return view.text(f"{self.release} {self.machine} ({self.platform.get('python', 'python ?')}, "
                         f"ipcmatrix {kit.get('version', '?')})")

    def names(self):
        observations = self.report["observations"]
        return Names(formula_names(self.platform), lambda key: observations.get(key))


@dataclass
class Change:
    action: str              # add | change | confirm
    key: str
    value: object = None
    labels: list = field(default_factory=list)
    index: int | None = None
    before: str = ""


@dataclass
class Decisions:
    changes: list = field(default_factory=list)     # [Change]
    unchanged: list = field(default_factory=list)   # keys
    skipped: list = field(default_factory=list)     # (key, why)
    problems: list = field(default_factory=list)    # why bless refuses


@dataclass
class Plan:
    path: Path
    new_table: bool
    text: str
    changes: list
    unchanged: list
    skipped: list            # (key, why)


# --- TOML values -----------------------------------------------------------------------------

def toml_string(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotRepresentable("a string that is not valid Unicode") from None
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value):
    """A JSON value as an inline TOML value (TOML has no null: refused)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) \
            else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if value is None:
        raise NotRepresentable("null inside a list or table")
    raise NotRepresentable(f"a {type(value).__name__}")


def rule_line(value):
    if isinstance(value, dict):
        raise NotRepresentable("an expect rule takes no JSON object")
    return "expect_null = true" if value is None else f"expect = {toml_value(value)}"


# --- deciding what to write --------------------------------------------------------------------

def plan(runs, tables_dir=None, name=None):
    """Work out the new table text for ``runs`` (``[Run]``); raise Refused if anything is off."""
    directory = Path(tables_dir or os.environ.get("IPCMATRIX_TABLES") or expectations.TABLES_DIR)
    known = catalogue.catalogue()
    systems = {str(run.platform.get("system")) for run in runs}
    if len(systems) != 1:
        raise Refused([f"the reports come from different systems ({', '.join(sorted(view.text(s) for s in systems))}); "
                       "bless one platform at a time"])
    try:
        tables = expectations.load_all(directory, known_keys=set(known))
    except expectations.TableError as exc:
        raise Refused([f"fix the tables first: {p}" for p in exc.problems]) from None
    table, path = target_table(runs, tables, directory, name)
    decisions = Decisions()
    for key in sorted(set().union(*(run.report["observations"] for run in runs))):
        if key in known:
            decide(key, runs, table, decisions)
        else:
            decisions.skipped.append((key, "no probe declares this key"))
    if decisions.problems:
        raise Refused(decisions.problems)
    changes = decisions.changes
    if table is None:
        text = new_table_text(path.stem, runs, tables, changes)
    else:
        text = edited_text(table, changes, runs)
    check(text, path, runs, table, tables, changes, known)
    return Plan(path=path, new_table=table is None, text=text, changes=changes,
                unchanged=decisions.unchanged, skipped=decisions.skipped)


def target_table(runs, tables, directory, name):
    """The table to edit (None for a new one) and its path."""
    system = runs[0].platform.get("system")
    if name is None:
        found = set()
        for run in runs:
            try:
                found.add(expectations.table_for(run.platform, tables).path)
            except expectations.UnknownPlatform:
                raise Refused([f"no table describes {view.text(system)} {view.text(run.release)}: give the new "
                               f"table a name with --platform NAME (e.g. --platform "
                               f"{expectations.suggested_table_name(run.platform)})"]) from None
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found))
            raise Refused([f"the reports fall under different tables ({names}); bless them separately"])
        path = found.pop()
        return next(t for t in tables if t.path == path), path
    if not TABLE_NAME.match(name):
        raise Refused([f"{name!r} is not a table name (letters, digits, '.', '-', '_'; like macos-26)"])
    for table in tables:
        if name in (table.name, table.path.stem):
            if table.platform.get("system") != system:
                raise Refused([f"{table.path.name} describes {table.platform.get('system')}, "
                               f"these reports come from {view.text(system)}"])
            condition = table.platform.get("release")
            for run in runs:
                if condition and not expectations.release_matches(condition, run.release):
                    raise Refused([f"{table.path.name} is for releases {condition}; "
                                   f"{run.source} is from {view.text(run.release)}"])
            return table, table.path
    return None, directory / f"{name}.toml"


def decide(key, runs, table, decisions):
    """Record in ``decisions`` what to do with ``key``, for each entry the runs fall under."""
    changes, problems = decisions.changes, decisions.problems
    groups = {}
    for run in runs:
        record = run.report["observations"].get(key)
        if not isinstance(record, dict):
            continue
        if "value" not in record:
            why = f"{record.get('verdict')} in {run.source}: {view.text(record.get('error'))}"
            decisions.skipped.append((key, why))
            continue
        if record.get("timing") or session.is_timing(view.family_of(key)):
            # A timing is never an exact expectation: write its loose rule by hand.
            decisions.skipped.append((key, f"a timing ({view.show(record['value'])} in "
                                           f"{run.source}); its rule stays loose, by hand"))
            continue
        index = entry_index(table, key, run) if table else None
        groups.setdefault(index, []).append((run, record["value"]))
    for index, seen in groups.items():
        entry = table.entries[key][index] if index is not None else None
        labels = list(dict.fromkeys(run.label for run, _ in seen))
        if entry is not None and all(holds(entry, value, run) for run, value in seen):
            if entry.get("evidence") in UPGRADABLE:
                changes.append(Change("confirm", key, seen[0][1], labels, index,
                                      str(entry.get("evidence"))))
            else:
                decisions.unchanged.append(key)
            continue
        values = {view.canonical(value) for _, value in seen}
        if len(values) > 1:
            problems.append(f"{key}: the reports disagree: " + ", ".join(
                f"{view.show(value)} in {run.source}" for run, value in seen)
                + "; bless them separately, or write a rule that explains both "
                  "(a formula over tunables)")
            continue
        value = seen[0][1]
        try:
            rule_line(value)
        except NotRepresentable as exc:
            problems.append(f"{key}: {view.show(value)} cannot be written to TOML ({exc})")
            continue
        if entry is None:
            if table is not None and key in table.entries:
                run = seen[0][0]
                problems.append(f"{key}: {table.where(key)} has entries only for other releases "
                                f"or machines than {view.text(run.release)} {view.text(run.machine)}; add one by hand")
            else:
                changes.append(Change("add", key, value, labels))
        elif entry.get("evidence") == "reported":
            links = ", ".join(str(r["link"]) for r in expectations.reports_of(entry))
            problems.append(f"{key}: observed {view.show(value)}, but {table.where(key, index)} "
                            f"({rules.describe(entry)}) was reported from a real machine by "
                            f"{links}: check those reports and the release; edit it by hand")
        elif rules.kind_of(entry) in ("expect", "expect_null"):
            changes.append(Change("change", key, value, labels, index, rules.describe(entry)))
        else:
            problems.append(f"{key}: observed {view.show(value)}, which its rule "
                            f"({rules.describe(entry)}, {table.where(key, index)}) does not give; "
                            "a single observed value cannot replace a rule: edit it by hand")


def entry_index(table, key, run):
    entry = table.entry_for(key, run.release, run.machine)
    if entry is None:
        return None
    return next(i for i, e in enumerate(table.entries[key]) if e is entry)


def holds(entry, value, run):
    try:
        return rules.judge(entry, value, run.names())[0]
    except (LookupError, rules.FormulaError):
        return False


# --- writing the text ----------------------------------------------------------------------------

def field_extent(lines, start):
    """``(end, comment)``: the field starting at line ``start`` spans lines[start:end]."""
    for end in range(start + 1, min(len(lines), start + 1000) + 1):
        chunk = "".join(lines[start:end])
        try:
            whole = tomllib.loads(chunk)
        except tomllib.TOMLDecodeError:
            continue
        chunk = chunk.rstrip("\n")
        for at in [i for i, ch in enumerate(chunk) if ch == "#"]:
            try:
                if tomllib.loads(chunk[:at]) == whole:
                    return end, chunk[at:]
            except tomllib.TOMLDecodeError:
                continue
        return end, ""
    raise Refused([f"cannot find where the field on line {start + 1} ends"])


def edited_text(table, changes, runs):
    text = table.path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    where = expectations.index_lines(text)
    edits = []          # (start, end, new lines), on distinct fields

    def field_line(key, index, name):
        number = where.get((key, index, name))
        if number is None:
            raise Refused([f"{key}: cannot find its {name} in {table.path.name} "
                           "(only [\"key\"] headers with one field per line can be edited)"])
        return number - 1

    def replace(key, index, name, new):
        start = field_line(key, index, name)
        end, comment = field_extent(lines, start)
        edits.append((start, end, [new + (f"  {comment}" if comment else "") + "\n"]))
        return end

    additions = []
    for change in changes:
        if change.action == "add":
            additions.append(change)
            continue
        entry = table.entries[change.key][change.index]
        seen = change.labels
        if change.action == "change":
            replace(change.key, change.index, rules.kind_of(entry), rule_line(change.value))
        else:
            old = entry.get("observed_on", [])
            seen = list(dict.fromkeys((old if isinstance(old, list) else [old]) + seen))
        after_evidence = replace(change.key, change.index, "evidence", 'evidence = "observed"')
        observed = f"observed_on = {toml_value(seen)}"
        if (change.key, change.index, "observed_on") in where:
            replace(change.key, change.index, "observed_on", observed)
        else:
            edits.append((after_evidence, after_evidence, [observed + "\n"]))
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[start:end] = new
    out = "".join(lines)
    if additions:
        out = out.rstrip("\n") + "\n\n" + "".join(added_entries(additions, runs))
    return out


def added_entries(changes, runs):
    tunables = list(dict.fromkeys(
        ", ".join(f"{view.text(name)}={view.show(value)}" for name, value in sorted(
            (run.platform.get("tunables") or {}).items())) or "none recorded" for run in runs))
    labels = list(dict.fromkeys(label for change in changes for label in change.labels))
    out = [f"# --- recorded by ipcmatrix bless from {'; '.join(labels)} ---\n",
           "# Values that depend on tunables are recorded as constants: where one does, replace\n",
           f"# it with a formula. Tunables of these runs: {'; '.join(tunables)}\n"]
    for change in changes:
        ref = f"observed by ipcmatrix bless on {change.labels[0]}; no source reference yet"
        out += ["\n", f"[{toml_string(change.key)}]\n", rule_line(change.value) + "\n",
                f"ref = {toml_string(ref)}\n", 'evidence = "observed"\n',
                f"observed_on = {toml_value(change.labels)}\n"]
    return out


def new_table_text(name, runs, tables, changes):
    system = str(runs[0].platform.get("system"))
    majors = {version_tuple(run.release)[:1] for run in runs}
    if len(majors) > 1:
        raise Refused([f"the reports come from different major releases "
                       f"({', '.join(run.release for run in runs)}); bless each into its own table"])
    major = majors.pop()
    # Deadlines and windows from a table of the same system, the general one first.
    same = sorted((t for t in tables if t.platform.get("system") == system),
                  key=lambda t: "release" in t.platform)
    kin = same[0] if same else None
    settings = {k: (kin.setting(k) if kin else v) for k, v in expectations.PLATFORM_DEFAULTS.items()}
    labels = list(dict.fromkeys(run.label for run in runs))
    head = [f"# {name}: what the kit expects, recorded by `ipcmatrix bless` from real runs.\n",
            "#\n",
            "# Every entry was observed on a real machine (evidence = \"observed\"; see observed_on)\n",
            "# and none has a source reference yet: replace each ref with the kernel source file and\n",
            "# function, man page or bug link that explains the value.\n",
            f"# Settings copied from {kin.path.name}.\n" if kin
            else "# Settings are the kit's defaults.\n",
            "\n", "[platform]\n", f"name = {toml_string(name)}\n", f"system = {toml_string(system)}\n"]
    if major:
        head.append(f"release = {toml_string(str(major[0]))}\n")
    head += [f"{k} = {toml_value(v)}\n" for k, v in settings.items()]
    head.append(f"observed_on = {toml_value(labels)}\n\n")
    return "".join(head) + "".join(added_entries([c for c in changes if c.action == "add"], runs))


def check(text, path, runs, table, tables, changes, known):
    """The new text loads, blessed keys now hold, nothing else moved, this table is picked."""
    with tempfile.TemporaryDirectory(prefix="ipcmatrix-bless-") as scratch:
        trial = Path(scratch) / path.name
        trial.write_text(text, encoding="utf-8")
        try:
            written = expectations.load(trial, known_keys=set(known))
        except expectations.TableError as exc:
            raise Refused([f"the edited table would not load (a bug in bless): {p}"
                           for p in exc.problems]) from None
    written.path = path
    changed = {c.key for c in changes}
    for run in runs:
        for key, record in run.report["observations"].items():
            if key in changed and isinstance(record, dict) and "value" in record:
                entry = written.entry_for(key, run.release, run.machine)
                if entry is None or not holds(entry, record["value"], run) \
                        or entry.get("evidence") != "observed":
                    raise Refused([f"{key}: after editing, the table does not give the observed "
                                   f"value (a bug in bless); nothing written"])
    if table is not None:
        moved = [k for k in set(table.entries) | set(written.entries)
                 if k not in changed and table.entries.get(k) != written.entries.get(k)]
        if moved or table.platform != written.platform:
            what = ", ".join(sorted(moved)) or "platform"
            raise Refused([f"editing would have changed other entries ({what}) (a bug in bless); "
                           "nothing written"])
    others = [t for t in tables if t.path != path]
    for run in runs:
        picked = expectations.table_for(run.platform, others + [written])
        if picked is not written:
            raise Refused([f"a run on {run.label} would use {picked.path.name}, not {path.name}: "
                           "give the new table a release condition that wins, or bless into "
                           f"{picked.path.name}"])


def write(plan):
    """Replace (or create) the table atomically."""
    handle, temporary = tempfile.mkstemp(dir=plan.path.parent, prefix=f".{plan.path.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(plan.text)
        os.replace(temporary, plan.path)
    except BaseException:
        os.unlink(temporary)
        raise
    return plan.path


def summary_lines(plan):
    counts = {action: sum(c.action == action for c in plan.changes)
              for action in ("add", "change", "confirm")}
    lines = [f"{plan.path}: {'new table' if plan.new_table else 'table'}: {counts['add']} added, "
             f"{counts['change']} changed, {counts['confirm']} confirmed (-> observed), "
             f"{len(plan.unchanged)} unchanged, {len(plan.skipped)} not recorded"]
    for change in plan.changes:
        if change.action == "add":
            lines.append(f"  added     {change.key} = {view.show(change.value)}")
        elif change.action == "change":
            lines.append(f"  changed   {change.key}: {change.before} -> {view.show(change.value)} "
                         "(ref and note kept: check they still hold)")
        else:
            kept = " (reported_by kept)" if change.before == "reported" else ""
            lines.append(f"  confirmed {change.key}: evidence {change.before} -> observed{kept}")
    lines += [f"  not recorded {key}: {why}" for key, why in plan.skipped]
    return lines
