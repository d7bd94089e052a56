"""Expectation tables: one TOML file per platform, kept apart from the code that reads it.

    [platform]
    system = "Linux"               # uname -s this table describes
    probe_deadline_s = 20          # per probe, before the runner kills its process tree
    block_window_s = 0.1           # how long a call waits before it counts as "blocks"
    timing_tolerance_ms = 50       # how late a timeout may fire and still be honoured

    ["dgram.queue.capacity_unconnected"]
    formula = "min(max_dgram_qlen + 1, ceil(dgram.sndbuf_default / dgram.truesize_small))"
    ref = "net/unix/af_unix.c unix_dgram_sendmsg, unix_recvq_full_lockless"
    evidence = "observed"          # seen on a real run here; see below for the others

Evidence says how the entry is known, strongest first:
- ``observed``: a real run of this kit saw it (``observed_on`` says where);
- ``reported``: others saw it on a real machine: a test suite that runs on that platform
  asserts it, or an issue quotes real output.  ``reported_by`` lists the links, each a URL,
  ``owner/repo#N`` (a GitHub issue or pull request) or a test file path in the platform's
  own tree (``tests/sys/kern/unix_dgram.c``, optionally ``:test_case``); ``reported_on``
  names the release it was seen on (``"macOS 15"``), for the entry or per link
  (``{ link = "...", on = "FreeBSD 14.1" }``).  A report on a release the entry does not
  apply to is refused: it says nothing about this entry;
- ``source``: derived from code or documentation only.

An entry whose behaviour changed between releases is an array of tables, each with a
``release`` condition (``">=11"``, ``">=13, <15"``) and optionally ``machine``.
The checker rejects unknown keys, unknown fields, missing refs and malformed rules,
naming the file and line.
"""
from __future__ import annotations

import difflib
import functools
import errno
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ipcmatrix import rules
from ipcmatrix.platform import IPC_TUNABLES, TUNABLES, formula_names, platform_name, version_tuple

TABLES_DIR = Path(__file__).resolve().parent / "tables"
EVIDENCE = ("observed", "reported", "source")     # strongest first
ENTRY_FIELDS = set(rules.RULE_KINDS) | {"ref", "evidence", "note", "release", "machine",
                                         "observed_on", "reported_by", "reported_on"}
PLATFORM_FIELDS = {"name", "system", "release", "probe_deadline_s", "block_window_s",
                   "timing_tolerance_ms", "observed_on", "note"}
MAX_TABLE_BYTES = 4 << 20   # a table is a few hundred entries; anything near this is not one
PLATFORM_DEFAULTS = {"probe_deadline_s": 30.0, "block_window_s": 0.1, "timing_tolerance_ms": 100}


class TableError(Exception):
    """One or more problems in a table, each as ``file:line: message``."""

    def __init__(self, problems):
        self.problems = problems
        super().__init__("\n".join(problems))


class UnknownPlatform(LookupError):
    """No table describes this platform; the message says how to record one."""


@dataclass
class Table:
    path: Path
    platform: dict
    entries: dict = field(default_factory=dict)   # key -> [entry, ...]
    lines: dict = field(default_factory=dict)     # (key, index, field) -> line number

    @property
    def name(self):
        return self.platform.get("name") or self.path.stem

    def setting(self, name):
        return self.platform.get(name, PLATFORM_DEFAULTS.get(name))

    def entry_for(self, key, release="", machine=""):
        """The entry that applies to ``key`` on this release and machine, or None."""
        fitting = [e for e in self.entries.get(key, []) if applies(e, release, machine)]
        # The most specific entry wins: one limited to releases beats one that is not.
        fitting.sort(key=lambda e: -(("release" in e) + ("machine" in e)))
        return fitting[0] if fitting else None

    def where(self, key, index=0, name=None):
        """``file:line`` of an entry (or one of its fields), for messages."""
        line = self.lines.get((key, index, name)) or self.lines.get((key, index, None), 0)
        return f"{self.path}:{line}"


# --- conditions ------------------------------------------------------------------------

_CONDITION = re.compile(r"^\s*(>=|<=|==|>|<)?\s*(\d+(?:\.\d+)*)\s*$")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
        ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def release_matches(condition, release):
    """``">=13, <15"`` against a release such as ``"14.5"`` (compared as version numbers)."""
    have = version_tuple(release)
    if not have:  # an unknown release satisfies no condition, not even "<15"
        return False
    for part in condition.split(","):
        op, number = _CONDITION.match(part).groups()
        want = version_tuple(number)
        if op in (None, "=="):  # "14" means any 14.x
            if have[:len(want)] != want:
                return False
        elif not _OPS[op](have, want):
            return False
    return True


def applies(entry, release, machine):
    if "release" in entry and not release_matches(entry["release"], release):
        return False
    machines = entry.get("machine")
    if machines and machine not in ([machines] if isinstance(machines, str) else machines):
        return False
    return True


# --- loading and checking ----------------------------------------------------------------------

_HEADER = re.compile(r'^\s*(\[\[?)\s*(?:"([^"]*)"|([A-Za-z0-9_.-]+))\s*\]\]?\s*(#.*)?$')
_FIELD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=")


def index_lines(text):
    """Map (key, entry index, field) to line numbers; field None is the header line."""
    lines, counts, current = {}, {}, None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            key = header.group(2) if header.group(2) is not None else header.group(3)
            index = counts.get(key, 0)
            counts[key] = index + 1
            current = (key, index)
            lines.setdefault((key, index, None), number)
            continue
        found = _FIELD.match(line)
        if found and current:
            lines.setdefault((*current, found.group(1)), number)
    return lines


def load(path, known_keys=None):
    """Read and check one table; raise TableError listing every problem with its line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TABLE_BYTES + 1)
        if len(raw) > MAX_TABLE_BYTES:
            raise TableError([f"{path}: larger than a table can be ({MAX_TABLE_BYTES} bytes)"])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError([f"{path}: cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise TableError([f"{path}: nested too deeply to be a table"]) from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise TableError([f"{path}:{found.group(1) if found else 0}: not valid TOML: {exc}"]) from None
    platform = data.pop("platform", None) or {}
    lines = index_lines(text)
    if not isinstance(platform, dict):
        raise TableError([f"{path}:{lines.get(('platform', 0, None), 0)}: "
                          f"platform must be a [platform] table, not {type(platform).__name__}"])
    table = Table(path=path, platform=platform, lines=lines)
    problems = _check_platform(table)
    sound = []
    for key, raw in data.items():
        entries = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(e, dict) for e in entries):
            problems.append(f"{table.where(key)}: {key!r} must be a table of fields "
                            f"(did you mean [\"{key}\"] with expect = ...?)")
            continue
        table.entries[key] = entries
        if known_keys is not None and key not in known_keys:
            problems.append(f"{table.where(key)}: unknown observation key {key!r}"
                            f"{_suggest(key, known_keys)}")
        for index, entry in enumerate(entries):
            found = check_entry(entry)
            if not found and known_keys is not None:
                sound.append((key, index, entry))
            problems += [f"{table.where(key, index, name)}: {key}: {message}"
                         for name, message in found]
    # Formulas are tried out once every entry is in: one may name another key of the table.
    for key, index, entry in sound:
        problems += [f"{table.where(key, index, name)}: {key}: {message}"
                     for name, message in check_evaluation(entry, table, known_keys)]
    if problems:
        raise TableError(sorted(problems, key=_line_of))
    return table


def _line_of(problem):
    found = re.match(r"^.*?:(\d+):", problem)
    return int(found.group(1)) if found else 0


def _check_platform(table):
    problems = []
    where = table.where("platform")
    if not table.platform.get("system"):
        problems.append(f"{where}: [platform] needs system = \"<uname -s>\"")
    release = table.platform.get("release")
    if release is not None and not valid_condition(release):
        problems.append(f"{table.where('platform', 0, 'release')}: release condition "
                        f"{rules.as_json(release)} is not like \">=13, <15\"")
    for name, value in table.platform.items():
        if name not in PLATFORM_FIELDS:
            problems.append(f"{table.where('platform', 0, name)}: unknown platform field {name!r}")
        elif name in PLATFORM_DEFAULTS and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            problems.append(f"{table.where('platform', 0, name)}: {name} must be a positive number")
    return problems


def check_entry(entry):
    """(field, message) for each problem of one entry."""
    problems = [(name, f"unknown field {name!r} (allowed: {', '.join(sorted(ENTRY_FIELDS))})")
                for name in entry if name not in ENTRY_FIELDS]
    problems += rules.validate(entry)
    if not isinstance(entry.get("ref"), str) or not entry.get("ref", "").strip():
        problems.append(("ref", "every entry needs a ref: kernel file and function, man page or bug link"))
    if entry.get("evidence") not in EVIDENCE:
        problems.append(("evidence", f"evidence must be one of {', '.join(EVIDENCE)}"))
    for name in ("note", "ref"):
        if name in entry and not isinstance(entry[name], str):
            problems.append((name, f"{name} must be text"))
    for name in ("machine", "observed_on"):
        value = entry.get(name)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            problems.append((name, f"{name} must be text or a list of texts"))
    release = entry.get("release")
    if release is not None and not valid_condition(release):
        problems.append(("release", f"release condition {rules.as_json(release)} is not like \">=13, <15\""))
        release = None
    problems += [(kind, message) for kind in ("expect", "one_of") if kind in entry
                 for message in unknown_errnos(entry[kind])]
    problems += check_reports(entry, release)
    return problems


def valid_condition(condition):
    return isinstance(condition, str) and all(_CONDITION.match(p) for p in condition.split(","))


# --- every rule evaluated against a sample of the table's platform -----------------------------

# Errno names of macOS and FreeBSD (sys/errno.h) that Linux, where the checker usually runs,
# lacks; a table value that looks like an errno name must be one of some platform's.
OTHER_ERRNOS = {"EAUTH", "EBADARCH", "EBADEXEC", "EBADMACHO", "EBADRPC", "ECAPMODE", "EDEVERR",
                "EDOOFUS", "EFTYPE", "EINTEGRITY", "ENEEDAUTH", "ENOATTR", "ENOPOLICY",
                "ENOTCAPABLE", "ENOTSUP", "EPROCLIM", "EPROCUNAVAIL", "EPROGMISMATCH",
                "EPROGUNAVAIL", "EPWROFF", "EQFULL", "ERPCMISMATCH", "ESHLIBVERS", "EWOULDBLOCK"}
_ERRNO_LIKE = re.compile(r"^E[A-Z0-9]{2,}$")
SAMPLE_TUNABLE = 4096      # what every tunable is taken to be when a formula is tried out
SAMPLE_OBSERVATION = 1024  # an observation key a formula names, when its table gives no number


def unknown_errnos(rule):
    """Messages for the strings of a rule that look like errno names and are no platform's."""
    values = rule if isinstance(rule, list) else [rule]
    wrong = sorted({v for v in values if isinstance(v, str) and _ERRNO_LIKE.match(v)
                    and not hasattr(errno, v) and v not in OTHER_ERRNOS})
    messages = []
    for name in wrong:
        near = difflib.get_close_matches(name, list(errno.errorcode.values()) + sorted(OTHER_ERRNOS), n=1)
        messages.append(f"{name} is not an errno name" + (f" (did you mean {near[0]}?)" if near else ""))
    return messages


def sample_names(table):
    """What a formula may read on the table's platform, with sample values: every tunable the
    kit records there (by alias and in full), rlimit_nofile, and the observation keys."""
    return _sample_names(platform_name(str(table.platform.get("system", ""))))


@functools.cache
def _sample_names(system):
    tunables = {name: SAMPLE_TUNABLE for name in TUNABLES.get(system, [])}
    ipc = {name: SAMPLE_TUNABLE for name in IPC_TUNABLES.get(system, [])}
    return formula_names({"tunables": tunables, "ipc_tunables": ipc,
                          "rlimit_nofile": [SAMPLE_TUNABLE, SAMPLE_TUNABLE]})


def check_evaluation(entry, table, known_keys):
    """(field, message) for a formula naming what no run records, or failing when worked out."""
    kind = rules.kind_of(entry)
    facts = sample_names(table)
    problems = []
    for formula in rules.formulas_of(entry):
        names = rules.names_in(formula)
        unknown = sorted(n for n in names if n not in facts and n not in known_keys)
        for name in unknown:
            near = difflib.get_close_matches(name, sorted(facts) + sorted(known_keys), n=1)
            problems.append((kind, f"formula {rules.as_json(formula)} names {name!r}, which is "
                                   "neither a tunable recorded on this platform nor an observation "
                                   "key" + (f" (did you mean {near[0]}?)" if near else "")))
        if unknown:
            continue
        sample = dict(facts)
        sample.update({n: _sample_value(table, n) for n in names if n not in facts})
        try:
            rules.evaluate(formula, sample)
        except (rules.FormulaError, LookupError) as exc:
            problems.append((kind, f"formula {rules.as_json(formula)} fails when worked out "
                                   f"(tunables {SAMPLE_TUNABLE}, keys {SAMPLE_OBSERVATION}): {exc}"))
    return problems


def _sample_value(table, key):
    for entry in table.entries.get(key, []):
        value = entry.get("expect")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return SAMPLE_OBSERVATION


# --- reported evidence -------------------------------------------------------------------------

_URL = re.compile(r"^https?://[A-Za-z0-9.-]+\.[A-Za-z]{2,}(/\S*)?$")
_ISSUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+#[1-9][0-9]*$")
_TEST_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*"
                        r"/[A-Za-z0-9_][A-Za-z0-9_+-]*\.[A-Za-z0-9]+(:[A-Za-z0-9_]+)?$")
# Where a test file path of each platform's own tree can be read.
SOURCE_TREES = {"FreeBSD": "https://github.com/freebsd/freebsd-src/blob/main/",
                "Darwin": "https://github.com/apple-oss-distributions/xnu/blob/main/"}


def link_kind(link):
    """``url``, ``issue`` (owner/repo#N) or ``test`` (a path in the platform's tree), or None."""
    if not isinstance(link, str):
        return None
    for kind, pattern in (("url", _URL), ("issue", _ISSUE), ("test", _TEST_PATH)):
        if pattern.match(link):
            return kind
    return None


def link_url(link, system=""):
    """Where a reader opens ``link``: the URL itself, the GitHub issue, the test file."""
    kind = link_kind(link)
    if kind == "url":
        return link
    if kind == "issue":
        repo, number = link.split("#")
        return f"https://github.com/{repo}/issues/{number}"   # GitHub sends pulls on from here
    if kind == "test" and system in SOURCE_TREES:
        return SOURCE_TREES[system] + link.split(":")[0]
    return None


def reports_of(entry):
    """The entry's reports as ``[{"link", "on"}]``: each link and the release it was seen on
    (the link's own ``on``, else the entry's ``reported_on``, else None)."""
    found = entry.get("reported_by")
    if not isinstance(found, list):
        return []
    default = entry.get("reported_on") if isinstance(entry.get("reported_on"), str) else None
    out = []
    for item in found:
        if isinstance(item, dict):
            on = item.get("on") if isinstance(item.get("on"), str) else default
            out.append({"link": item.get("link"), "on": on})
        else:
            out.append({"link": item, "on": default})
    return out


def check_reports(entry, release):
    """(field, message) for each problem of an entry's reported evidence."""
    found = entry.get("reported_by")
    if entry.get("evidence") == "reported" and not found:
        return [("evidence", 'evidence = "reported" needs reported_by = ["<link>", ...]: '
                             "a URL, owner/repo#N, or a test file path in the platform's tree")]
    if found is not None and entry.get("evidence") == "source":
        return [("evidence", 'an entry with reported_by is evidence = "reported" (or "observed"), '
                             'never "source"')]
    if found is None:
        if "reported_on" in entry:
            return [("reported_on", "reported_on without reported_by says nothing")]
        return []
    problems = []
    if not isinstance(found, list) or not found:
        return [("reported_by", "reported_by must be a list of links")]
    if "reported_on" in entry and not isinstance(entry["reported_on"], str):
        problems.append(("reported_on", "reported_on must be text, like \"macOS 15\""))
    for item in found:
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"link", "on"})
            if unknown or "link" not in item:
                problems.append(("reported_by", f"a report is {{ link = \"...\", on = \"...\" }}, "
                                                f"not {item!r}"))
                continue
            if "on" in item and not isinstance(item["on"], str):
                problems.append(("reported_by", f"{item['link']!r}: on must be text, like \"macOS 15\""))
        link = item.get("link") if isinstance(item, dict) else item
        if link_kind(link) is None:
            problems.append(("reported_by", f"{link!r} is not a link: use a URL, owner/repo#N, "
                                            "or a test file path like tests/sys/kern/unix_dgram.c"))
    for report in reports_of(entry):
        problems += _release_problems(report, release)
    return problems


def _release_problems(report, release):
    """A report counts only on a release the entry applies to (and must say which when the
    entry is limited to some releases)."""
    if release is None:
        return []
    if not report["on"]:
        return [("reported_by", f"{report['link']!r}: this entry is for releases {release}: "
                                "say which release it was seen on (reported_on, or on = per link)")]
    seen = version_tuple(re.sub(r"^\D*", "", report["on"]))
    if not seen:
        return [("reported_by", f"{report['link']!r}: seen on {report['on']!r}: give the release "
                                "as a number (\"macOS 14.5\", \"FreeBSD 14.1\")")]
    if not release_matches(release, ".".join(map(str, seen))):
        return [("reported_by", f"{report['link']!r} was seen on {report['on']}, outside this "
                                f"entry's releases {release}: it does not support this entry")]
    return []


def _suggest(key, known_keys):
    family = key.split(".")[0]
    near = sorted(k for k in known_keys if k.startswith(family + "."))[:3]
    return f" (keys of {family!r} include {', '.join(near)})" if near else ""


def load_all(directory=None, known_keys=None):
    """Every table in a directory; all their problems are reported together."""
    return _load_each(sorted(tables_directory(directory).glob("*.toml")), known_keys)


def _load_each(paths, known_keys):
    tables, problems = [], []
    for path in paths:
        try:
            tables.append(load(path, known_keys))
        except TableError as exc:
            problems += exc.problems
    if problems:
        raise TableError(problems)
    return tables


def load_for(platform_block, directory=None, known_keys=None):
    """The tables a run on this platform reads, checked: those of its system, told apart
    from the rest by their [platform] blocks alone (a table whose block cannot be read on
    its own is read whole).  A run has no use for another system's table, and reading
    every table is most of a run's start; ``ipcmatrix check`` checks them all."""
    system = platform_block.get("system")
    return _load_each([path for path in sorted(tables_directory(directory).glob("*.toml"))
                       if (platform_block_of(path) or {"system": system}).get("system") == system],
                      known_keys)


def platform_block_of(path):
    """A table's [platform] block, parsed without the rest of the file; None when it is not
    one plain block (the table must then be read whole to say what it is)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]
    mine = [i for i in headers if lines[i].strip() == "[platform]"]
    dotted = any(line.lstrip().startswith(("platform.", "[platform.", "platform =")) for line in lines)
    if len(mine) != 1 or dotted:
        return None
    end = next((i for i in headers if i > mine[0]), len(lines))
    try:
        block = tomllib.loads("\n".join(lines[mine[0]:end])).get("platform")
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    return block if isinstance(block, dict) and "system" in block else None


def platform_table(platform_block, directory=None):
    """The table a run on this platform judges by, with its [platform] block alone: the
    settings its probes need, before anything else of any table is read.  None when a
    table's block cannot be read alone or there is no directory (the tables must then be
    read whole first); UnknownPlatform when no table describes this platform."""
    try:
        paths = sorted(tables_directory(directory).glob("*.toml"))
    except TableError:
        return None
    stubs = []
    for path in paths:
        block = platform_block_of(path)
        if block is None:
            return None
        stubs.append(Table(path=path, platform=block))
    return table_for(platform_block, stubs)


def tables_directory(directory=None):
    """The directory of tables a command reads: given, $IPCMATRIX_TABLES, or the kit's own."""
    directory = Path(directory or os.environ.get("IPCMATRIX_TABLES") or TABLES_DIR)
    if not directory.is_dir():
        raise TableError([f"{directory}: no such directory of expectation tables"])
    return directory


def suggested_table_name(platform_block):
    """A name for a new platform's table: ``sunos-5``, ``macos-26`` (letters, digits, ``-``)."""
    name = str(platform_block.get("name") or platform_block.get("system") or "unknown").lower()
    major = version_tuple(platform_block.get("release", ""))[:1]
    if major:
        name = f"{name}-{major[0]}"
    return re.sub(r"[^a-z0-9-]+", "-", name).strip("-") or "unknown"


def table_for(platform_block, tables):
    """The table for this run's platform: same system, the most specific release match."""
    system, release = platform_block["system"], platform_block.get("release", "")
    # A table without a release condition covers every release, even an unknown one.
    fitting = [t for t in tables if t.platform.get("system") == system
               and ("release" not in t.platform or release_matches(t.platform["release"], release))]
    if not fitting:
        raise UnknownPlatform(
            f"No expectation table describes {system} {release or '(release unknown)'} "
            f"({platform_block.get('machine')}). Record this platform from a run's report with:\n"
            f"    ipcmatrix bless REPORT.json --platform {suggested_table_name(platform_block)}")
    fitting.sort(key=lambda t: "release" not in t.platform)
    return fitting[0]
