"""Turn one measured observation and its table entry into a report record with a verdict."""
from __future__ import annotations

from collections.abc import Mapping

from ipcmatrix import rules

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


def judge(key, measured, entry, names, family, probe_problem="", timing=False):
    """The report record for ``key``.

    ``measured`` is the probe's record (``value`` or ``error``), or None when the probe
    never got to it; ``probe_problem`` then says why (a timeout, a crash).  A ``timing``
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
        lines.append(f"  observed: {record['value']!r}")
    if "error" in record:
        lines.append(f"  error:    {record['error']}")
    if record.get("rule"):
        lines.append(f"  expected: {record.get('expected')!r}  ({record['rule']})")
        lines.append(f"  ref:      {record.get('ref')}  [evidence: {record.get('evidence')}]")
    if record.get("detail"):
        lines.append(f"  detail:   {record['detail']}")
    if record.get("stderr_tail"):
        lines.append(f"  probe stderr (tail):\n{record['stderr_tail']}")
    return "\n".join(lines)
