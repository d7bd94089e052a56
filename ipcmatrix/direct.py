"""A run judged in this process, without pytest: what ``ipcmatrix run`` does by default.

The session measures every family side by side from the moment the command starts; the
suites would then only read what it measured, one pytest test per key.  Importing and
starting pytest costs more CPU than most families, on the same cores as the probes, so
a run that asks nothing of pytest (no options after ``--``, no workers) judges each key
here instead, with the same ``Conformance.check`` and ``verdict.outcome_for`` the suites
use, and ends as the plugin does: the report written, then the summary, then the status.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from ipcmatrix import catalogue, report, runner, stopping
from ipcmatrix.verdict import outcome_for

# The statuses pytest would give the same run, so that CI scripts see no difference.
PASSED, FAILED, INTERRUPTED, REPORT_NOT_WRITTEN = 0, 1, 2, 6
MARKS = {"passed": ".", "failed": "F", "skipped": "s"}


def wanted(args):
    """Whether this run can do without pytest: nothing after ``--`` and no workers."""
    return not args.pytest_args and str(args.workers) == "0"


def run(args, conformance, json_path, started, since):
    """Judge every key of the run's families, write the report, print what pytest's
    ``-q -rfEs`` would, and return the exit status.

    ``conformance`` is the session ``start_early`` began (its families are measured side
    by side: wait for them), or one that measures each family as its keys are judged,
    one at a time (where ``ulimit -v`` leaves no room for twenty waiting threads).
    Interrupted, it stops every probe and still writes and shows what was measured.
    ``since``: when the command began (time.monotonic).
    """
    families = args.family or catalogue.families()
    outcomes, records = {}, {}
    try:
        # Each family is judged as soon as it is measured, while the others still run.
        for family in conformance.as_measured(families, stopping.run_deadline(conformance, families)):
            for observation in catalogue.observations_of(family):
                records[observation.key] = record = conformance.check(observation.key)
                outcomes[observation.key] = outcome_of(observation.key, record, conformance)
    except KeyboardInterrupt as interrupt:   # a signal: runner.end_run names it
        stop_measuring(conformance, f"the run was interrupted by {str(interrupt) or 'SIGINT'}")
    records = in_catalogue_order(records, families)
    interrupted = runner.cancelled()
    data = conformance.report(records, started=started, interrupted=interrupted)
    for key, record in data["observations"].items():   # measured, never judged by the loop
        outcomes.setdefault(key, outcome_of(key, record, conformance))
    write_error = ""
    try:
        report.write(data, json_path)
    except OSError as exc:
        write_error = f"could not write the report to {json_path}: {exc}"
    if not write_error and os.environ.get("GITHUB_STEP_SUMMARY"):
        from ipcmatrix import render_markdown   # only on GitHub Actions
        write_error = render_markdown.append_step_summary(data, report_path=json_path,
                                                          tables=args.tables)
    show(families, outcomes, data, json_path, args.tables, write_error,
         seconds=time.monotonic() - since)
    if write_error:
        return REPORT_NOT_WRITTEN
    if interrupted:
        return INTERRUPTED
    return FAILED if any(o == "failed" for o, _ in outcomes.values()) else PASSED


def outcome_of(key, record, conformance):
    return outcome_for(key, record, assert_timings=conformance.assert_timings,
                        unknown_platform=conformance.unknown_platform,
                        table_path=conformance.table.path if conformance.table else None)


def stop_measuring(conformance, reason):
    """Every probe is told to stop at once; a second signal meanwhile would only lose the
    report, so they are ignored from here on (the run ends within a second)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    runner.cancel_all(reason)
    conformance.prefetched.wait()


def in_catalogue_order(records, families):
    """The records in the order the families and their keys are declared, as the suites
    would have judged them."""
    order = [o.key for family in families for o in catalogue.observations_of(family)]
    return {key: records[key] for key in order if key in records}


def show(families, outcomes, data, json_path, tables, write_error, seconds, out=None):
    """A mark a key, a line a family, then the failures, the skips and the run's summary."""
    out = out or sys.stdout
    for family in families:
        keys = [o.key for o in catalogue.observations_of(family)]
        marks = "".join(MARKS[outcomes[key][0]] for key in keys if key in outcomes)
        out.write(f"{family:<11} {marks}\n")
    failed = [(key, message) for key, (outcome, message) in outcomes.items() if outcome == "failed"]
    skipped = [message for outcome, message in outcomes.values() if outcome == "skipped"]
    if failed:
        out.write(section("FAILURES"))
        for _key, message in failed:
            out.write(f"{message}\n\n")
    out.write(section("ipcmatrix"))
    for text, _colour in report.closing_lines(data, json_path, tables, write_error):
        out.write(text + "\n")
    if failed or skipped:
        out.write(section("short test summary info"))
        for _key, message in failed:
            out.write(f"FAILED {message.splitlines()[0]}\n")
        for message in skipped:
            out.write(f"SKIPPED {message}\n")
    counts = {name: sum(o == name for o, _ in outcomes.values()) for name in MARKS}
    words = ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no keys"
    out.write(f"{words} in {seconds:.2f}s\n")
    out.flush()


def section(title):
    return f"{f' {title} ':=^79}\n"
