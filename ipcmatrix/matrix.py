"""The expected-behaviour matrix, caniuse style: what each platform's table expects of
each key, straight from the tables, with no run needed.

One row per key (every key the probes declare, and any a table names), one column per
table.  A cell holds the table's entries for the key: the rule as a person reads it
(``"blocks"``, ``one of "ENOBUFS", "EAGAIN"``, ``= max_dgram_qlen + 1``), the evidence
behind it (``observed`` here, ``reported`` by others on a real machine, ``source`` only)
with any ``reported_by`` links, and the release or machine an entry is limited to.  A row
*differs* when the tables that describe the key do not all expect the same thing.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ipcmatrix import expectations, rules, view

# The platforms people port between first; any other table follows, by name.
PLATFORM_ORDER = ("linux", "macos", "freebsd", "gvisor")
EVIDENCE_ORDER = ("observed", "reported", "source")


@dataclass
class Variant:
    """One entry of one table for one key."""
    rule: str                  # the rule as shown: "blocks", one of ..., = formula
    evidence: str
    when: str = ""             # "release >=14, machine arm64", or "" for every release
    ref: str = ""
    note: str = ""
    reported_by: list = field(default_factory=list)   # (link, url or "", release or "")
    observed_on: str = ""


@dataclass
class Column:
    name: str
    system: str
    path: str
    conditions: list           # the release/machine conditions its entries use
    evidence: Counter          # evidence kind -> entries

    @property
    def label(self):
        return f"{self.name} ({self.system})" if self.system and self.system.lower() != self.name else self.name


@dataclass
class Row:
    key: str
    claim: str
    cells: list                # [Variant, ...] per column; [] when the table has no entry
    differs: bool = False


@dataclass
class ExpectedMatrix:
    columns: list
    families: dict             # family -> [Row]

    @property
    def rows(self):
        return [r for rows in self.families.values() for r in rows]

    @property
    def differing(self):
        return [r for r in self.rows if r.differs]

    def headline(self):
        undescribed = sum(1 for r in self.rows if not any(r.cells))
        line = (f"{len(self.rows)} keys, {len(self.columns)} platforms; "
                f"{len(self.differing)} keys are expected to differ between platforms")
        if undescribed:
            line += f"; {undescribed} keys have no expectation in any table"
        return line


def rule_text(entry):
    """The rule of an entry as a person reads it, values as JSON."""
    kind = rules.kind_of(entry)
    value = entry.get(kind)
    if kind == "expect":
        return view.show(value)
    if kind == "expect_null":
        return "null"
    if kind == "one_of":
        return "one of " + ", ".join(view.show(v) for v in value)
    if kind == "range":
        return " .. ".join(view.text(b) for b in value)
    if kind == "formula":
        return f"= {view.text(value)}"
    if kind in ("at_least", "at_most"):
        return f"{'>=' if kind == 'at_least' else '<='} {view.text(value)}"
    return view.text(value)


def condition(entry):
    parts = []
    if "release" in entry:
        parts.append(f"release {view.text(entry['release'])}")
    if entry.get("machine"):
        machines = entry["machine"]
        parts.append("machine " + (", ".join(map(view.text, machines)) if isinstance(machines, list)
                                   else view.text(machines)))
    return ", ".join(parts)


def _texts(value):
    if value is None:
        return []
    return [view.text(v) for v in value] if isinstance(value, list) else [view.text(value)]


def reports(entry, system=""):
    """An entry's ``reported_by`` as ``(link, url, release)`` texts: a link is a URL,
    ``owner/repo#N`` or a test file path in the platform's tree (each item a text or
    ``{link, on}``, with ``reported_on`` for the entry), as view.Row.reported_by has them."""
    found = entry.get("reported_by")
    default = entry.get("reported_on") if isinstance(entry.get("reported_on"), str) else ""
    out = []
    for item in found if isinstance(found, list) else []:
        link, on = (item.get("link"), item.get("on") or default) if isinstance(item, dict) \
            else (item, default)
        if not isinstance(link, str):
            continue
        url = link_url(link, system)
        out.append((view.text(link), url if url and SAFE_URL.match(url) else "", view.text(on)))
    return out


# Only plain https addresses become links (no quotes, brackets or spaces).
SAFE_URL = re.compile(r"^https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~%/:+=,@#?&-]*)?$")
_ISSUE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+)#([1-9][0-9]*)$")


def link_url(link, system=""):
    """Where a reader opens a ``reported_by`` link (the tables' own rule when they have one)."""
    if hasattr(expectations, "link_url"):
        return expectations.link_url(link, system) or ""
    found = _ISSUE.match(link)
    if found:
        return f"https://github.com/{found[1]}/{found[2]}/issues/{found[3]}"
    return link if SAFE_URL.match(link) else ""


def variant(entry, system=""):
    return Variant(rule=rule_text(entry), evidence=view.text(entry.get("evidence")),
                   when=condition(entry), ref=view.text(entry.get("ref")),
                   note=view.text(entry.get("note")), reported_by=reports(entry, system),
                   observed_on="; ".join(_texts(entry.get("observed_on"))))


def _order(table):
    name = table.name
    return (PLATFORM_ORDER.index(name) if name in PLATFORM_ORDER else len(PLATFORM_ORDER), name)


def build(tables, known=None):
    """The matrix of ``tables`` (from ``expectations.load_all``); ``known`` maps every key
    the probes declare to its claim (``catalogue.catalogue()``), so keys no table
    describes show as gaps."""
    tables = sorted(tables, key=_order)
    claims = {key: view.text(getattr(obs, "claim", obs)) for key, obs in (known or {}).items()}
    keys = sorted(set(claims).union(*(t.entries for t in tables)))
    columns = []
    for table in tables:
        entries = [e for found in table.entries.values() for e in found]
        conditions = sorted({condition(e) for e in entries} - {""})
        columns.append(Column(name=view.text(table.name), system=view.text(table.platform.get("system")),
                              path=view.text(table.path.name), conditions=conditions,
                              evidence=Counter(view.text(e.get("evidence")) for e in entries)))
    families = {}
    for key in keys:
        cells = [[variant(e, table.platform.get("system", "")) for e in
                  _sorted_entries(table.entries.get(key, []))] for table in tables]
        described = {tuple((v.rule, v.when) for v in cell) for cell in cells if cell}
        row = Row(key=view.text(key), claim=claims.get(key, ""), cells=cells, differs=len(described) > 1)
        families.setdefault(view.family_of(key), []).append(row)
    return ExpectedMatrix(columns=columns, families=families)


def _sorted_entries(entries):
    """The entry for every release first, then the ones limited to some releases."""
    return sorted(entries, key=lambda e: ("release" in e) + ("machine" in e))


def evidence_kinds(counter):
    """(kind, n) with the known kinds first, in the order observed, reported, source."""
    return sorted(((k, n) for k, n in counter.items() if n),
                  key=lambda item: (EVIDENCE_ORDER.index(item[0]) if item[0] in EVIDENCE_ORDER
                                    else len(EVIDENCE_ORDER), item[0]))
