"""Turn one measured observation and its table entry into a report record with a verdict."""
from __future__ import annotations

from collections.abc import Mapping

from ipcmatrix import expectations, rules, view

VERDICTS = ("match", "mismatch", "error", "timeout", "no-expectation", "timing")
# "timing": a key whose value is a timing (its probe module sets TIMINGS = True) was
# measured and judged; ``held`` says whether the table's loose claim held.  Timings move
# with load and machine, so this verdict never makes a run or its test fail (unless the
# user asks, --assert-timings): reports show it as information.


class Names(Mapping):
    """What a formula may read: the run's tunables and facts, then any observation's value.

    Observations are looked up lazily through ``lookup(key)``, so a formula may name a
    key of another family and only that family is measured for it.
    """

    def __init__(self, facts, lookup):
        self._facts = facts
        self._lookup = lookup

    def __getitem__(self, name):
        if name in self._facts:
            return self._facts[name]
        if "." in name:
            record = self._lookup(name) or {}
            if "value" in record:
                return record["value"]
        raise KeyError(name)

    def __contains__(self, name):
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __iter__(self):
        return iter(self._facts)

    def __len__(self):
        return len(self._facts)


def judge(key, measured, entry, names, family, probe_problem="", system="", timing=False):
    """The report record for ``key``.

    ``measured`` is the probe's record (``value`` or ``error``), or None when the probe
    never got to it; ``probe_problem`` then says why (a timeout, a crash).  ``system``
    (``uname -s``) says where a reported_by test file path can be read.  A ``timing``
    key that was measured and judged gets the verdict "timing", with ``held``.
    """
    record = {"probe": family}
    if timing:
        record["timing"] = True
    if entry is not None:
        record.update({"expected": None, "rule": rules.describe(entry),
                       "ref": entry.get("ref"), "evidence": entry.get("evidence")})
        if entry.get("note"):
            record["note"] = entry["note"]
        reports = reported_by(entry, system)
        if reports:
            record["reported_by"] = reports
    if measured is None:
        timed_out = probe_problem.startswith("timeout")
        record["error"] = probe_problem or "the probe reported nothing for this key"
        record["verdict"] = "timeout" if timed_out else "error"
        return record
    if "detail" in measured:
        record["detail"] = measured["detail"]
    if "value" not in measured:
        record["error"] = str(measured.get("error", "no value"))
        record["verdict"] = "error"
        if entry is not None and rules.error_expected(entry, record["error"]):
            record["verdict"], record["expected"] = "match", rules.expected_error(entry)
        return record
    record["value"] = measured["value"]
    if entry is None:
        record["verdict"] = "no-expectation"
        return record
    try:
        matched, expected = rules.judge(entry, measured["value"], names)
    except (LookupError, rules.FormulaError) as exc:
        record["verdict"] = "error"
        record["error"] = f"cannot work out the expected value: {_reason(exc)}"
        return record
    record["expected"] = expected
    if timing:
        record["verdict"], record["held"] = "timing", bool(matched)
    else:
        record["verdict"] = "match" if matched else "mismatch"
    return record


def reported_by(entry, system=""):
    """The entry's reports for a record: ``[{"link", "url", "on"}]``, ``url`` where a reader
    opens the link (None when it cannot be worked out), ``on`` the release (or None)."""
    return [{"link": report["link"], "url": expectations.link_url(report["link"], system),
             "on": report["on"]} for report in expectations.reports_of(entry)]


def recheck(record):
    """The verdict a report record's value and worked-out expected value give ("match" or
    "mismatch"), or None when the record does not say enough to tell."""
    rule, value, expected = record.get("rule"), record["value"], record.get("expected")
    if not isinstance(rule, str) or ": " not in rule:
        return None
    kind, _, text = rule.partition(": ")
    try:
        if kind in ("expect", "one_of", "formula"):
            entry = {kind if kind != "formula" else "expect": expected}
        elif kind == "expect_null":
            entry = {"expect_null": True}
        elif kind == "range" and isinstance(expected, str) and ".." in expected:
            entry = {"range": [float(b) for b in expected.split("..", 1)]}
        elif kind in ("at_least", "at_most") and isinstance(expected, str):
            entry = {kind: str(float(expected.split()[-1]))}
        else:
            return None
        if kind == "one_of" and not (isinstance(expected, list) and expected):
            return None
        matched, _ = rules.judge(entry, value, {})
    except (ValueError, TypeError, LookupError, rules.FormulaError):
        return None
    return "match" if matched else "mismatch"


def _reason(exc):
    if isinstance(exc, rules.MissingName):
        return f"this run recorded no usable value for {exc.args[0]}"
    return str(exc)


def explain_failure(key, record):
    """The message a failing test shows: key, observed, expected, rule, ref."""
    verdict = record["verdict"]
    if verdict == "timing":
        verdict = "timing (the claim " + ("held" if record.get("held") else "did not hold") + ")"
    lines = [f"{key}: {verdict}"]
    if "value" in record:
        lines.append(f"  observed: {view.show(record['value'])}")
    if "error" in record:
        lines.append(f"  error:    {record['error']}")
    if record.get("rule"):
        lines.append(f"  expected: {view.show(record.get('expected'))}  ({record['rule']})")
        lines.append(f"  ref:      {record.get('ref')}  [evidence: {record.get('evidence')}]")
        for report in record.get("reported_by") or []:
            on = f" (on {report['on']})" if report.get("on") else ""
            lines.append(f"  reported: {report.get('url') or report.get('link')}{on}")
    if record.get("detail"):
        lines.append(f"  detail:   {view.show(record['detail'])}")
    if record.get("stderr_tail"):
        lines.append(f"  probe stderr (tail):\n{record['stderr_tail']}")
    return "\n".join(lines)


def outcome_for(key, record, assert_timings=False, unknown_platform="", table_path=None):
    """How a key's test ends, whoever runs it: ("passed" | "failed" | "skipped", message).

    A timing passes unless ``assert_timings`` asks that its claim hold; a key the table
    has no entry for is skipped with the reason (an unknown platform: how to record it).
    """
    verdict = record["verdict"]
    if verdict == "match" or (verdict == "timing" and (record.get("held") or not assert_timings)):
        return "passed", ""
    if verdict == "no-expectation":
        lines = unknown_platform.splitlines()
        reason = (lines[0] + " " + lines[-1].strip() if lines
                  else f"{table_path} has no entry for {key} on this platform")
        return "skipped", f"{key} = {view.show(record.get('value'))}: {reason}"
    return "failed", explain_failure(key, record)
