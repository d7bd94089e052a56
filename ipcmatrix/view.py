"""What a report shows, whatever the format: values as short text, rows grouped by family.

Reports come from other machines.  ``report.read`` has checked their shape, but every
field is still treated as data of any type: nothing here assumes a string is a string,
and nothing in a report is ever evaluated.  The renderers escape what these functions
return; these functions only make it short and single-line.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

MAX_VALUE_CHARS = 160
MAX_TEXT_CHARS = 600
# Control and bidirectional-override characters never reach a terminal or a page raw.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Mismatches first, then what could not be judged, then what matched.
VERDICT_ORDER = ("mismatch", "error", "timeout", "no-expectation", "match")


def shorten(text, limit):
    if len(text) <= limit:
        return text
    return f"{text[:limit - 20]}… (+{len(text) - limit + 20} chars)"


def show(value):
    """A value as one short line of JSON, as the report holds it: ``"blocks"``, ``true``,
    ``null``, ``["EAGAIN", 11]`` (never Python's ``'blocks'``, ``True``, ``None``)."""
    try:
        shown = _escape_controls(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))
    except (TypeError, ValueError):
        shown = _escape_controls(json.dumps(str(value), ensure_ascii=False))
    return shorten(shown, MAX_VALUE_CHARS)


def text(value):
    """Free text (a ref, a note, an error message) as one line of bounded length."""
    if value is None:
        return ""
    value = value if isinstance(value, str) else show(value)
    return shorten(_escape_controls(" ".join(value.split())), MAX_TEXT_CHARS)


def _escape_controls(text):
    return _CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def canonical(value):
    """A form in which equal JSON values are equal (true is not 1, 1 is not "1")."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def family_of(key):
    return str(key).split(".", 1)[0]


def platform_label(platform):
    """``linux 6.18.44 x86_64``: the platform, its release and its machine."""
    platform = platform if isinstance(platform, dict) else {}
    parts = [platform.get("name") or platform.get("system"), platform.get("release"),
             platform.get("machine")]
    return " ".join(text(p) for p in parts if p not in (None, "")) or "unknown platform"


EVIDENCE_KINDS = ("observed", "reported", "source")


def evidence_counts(report):
    """How many of the expectations this run was checked against were observed on a real
    machine by this kit, reported by others from a real machine, or derived from source only."""
    counts = Counter()
    for record in _records(report):
        if record.get("rule") is not None or record.get("ref") is not None:
            evidence = record.get("evidence")
            counts[evidence if evidence in EVIDENCE_KINDS else "unstated"] += 1
    return {**{kind: counts[kind] for kind in EVIDENCE_KINDS},
            **({"unstated": counts["unstated"]} if counts["unstated"] else {})}


def evidence_sentence(counts):
    total = sum(counts.values())
    if not total:
        return "no expectations were checked (no table describes this platform)"
    reported = f", {counts['reported']} reported by others from a real machine" \
        if counts.get("reported") else ""
    words = f"{total} checked in this run, {counts['observed']} of them observed on a real " \
            f"machine{reported} and {counts['source']} derived from source only"
    if counts.get("unstated"):
        words += f", {counts['unstated']} with no evidence stated"
    return words


@dataclass
class Row:
    """One observation of one report, as every format shows it."""
    key: str
    kind: str                 # value | unsupported | error | timeout
    observed: str             # the value as text, or the error message
    expected: str = ""
    verdict: str = ""
    rule: str = ""
    ref: str = ""
    evidence: str = ""
    note: str = ""
    detail: str = ""
    error: str = ""
    raw: object = field(default=None, repr=False)   # the value itself, for comparisons
    reported_by: tuple = ()   # (link, url or "", release or ""): see reports()

    @property
    def family(self):
        return family_of(self.key)


def row(key, record):
    record = record if isinstance(record, dict) else {}
    verdict = str(record.get("verdict", ""))
    has_value = "value" in record
    if has_value:
        kind = "unsupported" if record["value"] == "unsupported" else "value"
        observed = show(record["value"])
    else:
        kind = "timeout" if verdict == "timeout" else "error"
        observed = text(record.get("error")) or kind
    has_rule = record.get("rule") is not None
    return Row(key=text(key), kind=kind, observed=observed,
               expected=show(record.get("expected")) if has_rule and verdict not in ("error", "timeout")
               else "",
               verdict=verdict, rule=text(record.get("rule")), ref=text(record.get("ref")),
               evidence=text(record.get("evidence")), note=text(record.get("note")),
               detail=text(record.get("detail")) if record.get("detail") else "",
               error=text(record.get("error")) if has_value and record.get("error") else "",
               raw=record.get("value") if has_value else None,
               reported_by=reports(record))


_SAFE_URL = re.compile(r"^https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~%/:+=,@#-]*)?$")


def reports(record):
    """A record's ``reported_by`` as ``(link, url, release)`` texts, at most 20.  ``url`` is
    kept only when it is a plain https address (no quotes, brackets or spaces): it comes from
    another machine's report and may become a clickable link."""
    found = record.get("reported_by") if isinstance(record, dict) else None
    out = []
    for item in found if isinstance(found, list) else []:
        if not isinstance(item, dict) or not item.get("link"):
            continue
        url = item.get("url") if isinstance(item.get("url"), str) else ""
        out.append((text(item["link"]), url if _SAFE_URL.match(url) and len(url) <= 300 else "",
                    text(item.get("on"))))
    return tuple(out[:20])


def rows(report):
    return [row(key, record) for key, record in _items(report)]


def by_family(all_rows):
    """Family -> its rows, families sorted, each with mismatches first."""
    families = {}
    for r in all_rows:
        families.setdefault(r.family, []).append(r)
    rank = {verdict: i for i, verdict in enumerate(VERDICT_ORDER)}
    return {family: sorted(found, key=lambda r: (rank.get(r.verdict, -1), r.key))
            for family, found in sorted(families.items())}


def verdict_counts(all_rows):
    counts = Counter(r.verdict for r in all_rows)
    return [(verdict, counts[verdict]) for verdict in VERDICT_ORDER if counts[verdict]]


@dataclass
class ReportView:
    """A report ready to render: header facts, then rows by family."""
    title: str
    facts: list               # (name, text) about the run
    platform: list            # (name, text)
    tunables: list            # (name, text)
    evidence: str
    counts: list              # (verdict, n)
    warnings: list            # (text, command to run or ""): incomplete run, unknown platform…
    families: dict            # family -> [Row]


PLATFORM_FIELDS = ("system", "release", "kernel", "machine", "python", "uid", "root", "umask",
                   "rlimit_nofile")


def report_view(report, source=""):
    platform = report.get("platform") if isinstance(report.get("platform"), dict) else {}
    tunables = platform.get("tunables") if isinstance(platform.get("tunables"), dict) else {}
    kit = report.get("kit") if isinstance(report.get("kit"), dict) else {}
    all_rows = rows(report)
    facts = [("kit", f"{text(kit.get('name') or 'ipcmatrix')} {text(kit.get('version'))}"),
             ("table", text(report.get("table")) or "none"),
             ("started", text(report.get("started"))), ("finished", text(report.get("finished")))]
    if source:
        facts.append(("report", text(source)))
    return ReportView(
        title=f"ipcmatrix report: {platform_label(platform)}",
        facts=facts,
        # Facts about the run are text (Linux, x86_64); only values are shown as JSON.
        platform=[(name, text(platform[name]) if isinstance(platform[name], str) else show(platform[name]))
                  for name in PLATFORM_FIELDS if name in platform],
        tunables=[(text(name), "missing" if value is None else show(value))
                  for name, value in sorted(tunables.items())],
        evidence=evidence_sentence(evidence_counts(report)),
        counts=verdict_counts(all_rows),
        warnings=warnings_of(report),
        families=by_family(all_rows))


def warnings_of(report):
    """(text, command) pairs; the command (how to record an unknown platform) may be ""."""
    found = []
    if report.get("complete") is False:
        found.append("INCOMPLETE: the run was interrupted; the report holds what was measured.")
    message = report.get("unknown_platform")
    if message:
        lines = str(message).splitlines()
        commands = [line for line in lines if line.strip().startswith("ipcmatrix ")]
        found.append((text("\n".join(line for line in lines if line not in commands)),
                      text(commands[0]) if commands else ""))
    probes = report.get("probes") if isinstance(report.get("probes"), dict) else {}
    for family, probe in sorted(probes.items()):
        if not isinstance(probe, dict):
            continue
        if probe.get("status") not in (None, "ok"):
            found.append(f"probe {text(family)}: {text(probe.get('status'))}"
                         + (f": {text(probe.get('message'))}" if probe.get("message") else ""))
        for what in ("left_processes", "left_files", "left_ipc_objects"):
            if probe.get(what):
                found.append(f"probe {text(family)} left behind (removed): {text(probe[what])}")
    return [w if isinstance(w, tuple) else (w, "") for w in found]


def _items(report):
    observations = report.get("observations")
    return sorted(observations.items()) if isinstance(observations, dict) else []


def _records(report):
    return [record for _, record in _items(report) if isinstance(record, dict)]
