"""The JSON behaviour report: one run on one platform.  Its schema: docs/reports.md.

Reports travel between machines, so reading one treats it as untrusted input: size
and nesting are bounded, types are checked, and nothing in it is ever executed.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import stat
import tempfile
from collections import Counter
from pathlib import Path

from ipcmatrix import __version__, verdict, view
from ipcmatrix.platform import current_umask
from ipcmatrix.verdict import VERDICTS

SCHEMA = "ipcmatrix-report/1"
MAX_REPORT_BYTES = 16 << 20
MAX_DEPTH = 32


class ReportError(ValueError):
    """A report file that cannot be used; the message names the file and the problem."""


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def build(platform, records, probes, table=None, started=None, interrupted=False,
          unknown_platform=""):
    """Assemble a report from judged records (key -> record) and probe runs (family -> run)."""
    counts = Counter(record["verdict"] for record in records.values())
    return {
        "schema": SCHEMA,
        "kit": {"name": "ipcmatrix", "version": __version__},
        "platform": platform,
        "table": table,
        "unknown_platform": unknown_platform or None,
        "started": started or now(),
        "finished": now(),
        "complete": not interrupted,
        "summary": {verdict: counts.get(verdict, 0) for verdict in VERDICTS},
        "probes": {family: probe_summary(run) for family, run in sorted(probes.items())},
        "observations": dict(sorted(records.items())),
    }


def probe_summary(run):
    summary = {"status": run.status, "elapsed_s": run.elapsed_s, "deadline_s": run.deadline_s,
               "returncode": run.returncode}
    for name in ("signal", "message", "stderr_tail", "left_processes", "left_files",
                 "left_ipc_objects"):
        value = getattr(run, name)
        if value:
            summary[name] = value
    return summary


STDOUT = "-"
STDOUT_FD_VARIABLE = "IPCMATRIX_REPORT_FD"   # the descriptor "-" means (default 1)


class UnwritablePath(OSError):
    """A report target that is not a regular file: never touched."""


def check_target(path):
    """Raise UnwritablePath unless ``path`` is "-", absent, or (through links) a regular file."""
    if str(path) == STDOUT:
        return
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise UnwritablePath(f"{path} is a dangling symbolic link; not written") from None
        return
    except OSError:
        return  # not a device or a directory; writing it will say what is wrong
    if stat.S_ISDIR(mode):
        raise UnwritablePath(f"{path} is a directory; give a file name (e.g. {path}/report.json)")
    if not stat.S_ISREG(mode):
        raise UnwritablePath(f"{path} is not a regular file (a device, FIFO or socket); it is "
                             f"never overwritten: give a file, or '-' for standard output")


def write(report, path):
    """Write the report: to standard output for "-", else atomically (temporary file,
    then rename, creating the directory) where ``path`` is absent or a regular file.

    A symbolic link to a regular file is followed, so the file it names is replaced, not
    the link.  Anything else (a device, a directory, a FIFO) raises UnwritablePath and is
    left as it was."""
    text = json.dumps(report, indent=1) + "\n"
    if str(path) == STDOUT:
        fd = int(os.environ.get(STDOUT_FD_VARIABLE, "1"))
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
        return path
    check_target(path)
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp's 0600 is for the temporary name only: the report gets what any file
        # this user writes gets (0644 under the usual umask), as the HTML pages do.
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        check_target(path)  # nothing replaced it with a device meanwhile
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def default_name(platform):
    """``linux-6.18.44-x86_64.json``: what the run was on, as a file name."""
    release = "".join(c if c.isalnum() or c in ".-" else "_" for c in str(platform.get("release", "")))
    return f"{platform.get('name', 'unknown')}-{release}-{platform.get('machine', '')}.json"


def read(path):
    """Load and check a report from anywhere; raise ReportError naming the file."""
    path = Path(path)
    try:
        # Read at most one byte too many: a pipe or a device has no size to check first.
        with open(path, "rb") as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
        if len(raw) > MAX_REPORT_BYTES:
            raise ReportError(f"{path}: larger than a report can be ({MAX_REPORT_BYTES} bytes)")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ReportError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not JSON: {exc}") from None
    problems = validate(data)
    if problems:
        raise ReportError(f"{path}: not an ipcmatrix report: " + "; ".join(problems[:5]))
    return data


def rejudge(data):
    """Judge again every verdict a report states, from its own value and worked-out expected
    value (a report is untrusted: a hand-edited "match" must not pass for one). A verdict that
    does not follow is corrected, the stated one kept as ``verdict_in_report``, the summary
    recounted; returns one warning per correction."""
    warnings = []
    for key, record in data["observations"].items():
        stated = record.get("verdict")
        if stated not in ("match", "mismatch") or "value" not in record:
            continue
        found = verdict.recheck(record)
        if found is not None and found != stated:
            record["verdict_in_report"], record["verdict"] = stated, found
            warnings.append(f"{view.text(key)}: the report says {stated}, but its value "
                            f"{view.show(record['value'])} against expected "
                            f"{view.show(record.get('expected'))} ({view.text(record.get('rule'))}) "
                            f"is a {found}: shown as {found}")
    if warnings:
        counts = Counter(r["verdict"] for r in data["observations"].values())
        data["summary"] = {name: counts.get(name, 0) for name in VERDICTS}
    return warnings


def other_version(data):
    """A warning when the report was written by another version of the kit, else ""."""
    kit = data.get("kit") if isinstance(data.get("kit"), dict) else {}
    if kit.get("version") == __version__:
        return ""
    return (f"written by ipcmatrix {view.text(kit.get('version')) or '(version unknown)'}, this is "
            f"{__version__}: keys keep their meaning, but its verdicts were judged by that "
            "version's tables")


def validate(data):
    """Problems with a report's shape (empty when it can be used)."""
    # Depth first: Python 3.13's json parses what 3.11's refuses as too deep, and the
    # answer must not depend on the interpreter.
    if _depth(data) > MAX_DEPTH:
        return [f"nested too deeply (more than {MAX_DEPTH} levels)"]
    if not isinstance(data, dict):
        return ["the top level must be an object"]
    problems = []
    if data.get("schema") != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    platform = data.get("platform")
    if not isinstance(platform, dict):
        problems.append("platform must be an object")
    else:
        problems += [f"platform.{name} must be a string" for name in ("system", "release", "machine")
                     if name in platform and not isinstance(platform[name], str)]
        if not isinstance(platform.get("tunables", {}), dict):
            problems.append("platform.tunables must be an object")
    if not isinstance(data.get("kit", {}), dict):
        problems.append("kit must be an object")
    observations = data.get("observations")
    if not isinstance(observations, dict):
        problems.append("observations must be an object")
        return problems
    for key, record in observations.items():
        if not isinstance(record, dict):
            problems.append(f"observation {key!r} must be an object")
        elif record.get("verdict") not in VERDICTS:
            problems.append(f"observation {key!r} has unknown verdict {record.get('verdict')!r}")
        elif "value" not in record and "error" not in record:
            problems.append(f"observation {key!r} has neither value nor error")
    return problems


def _depth(value, level=0):
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def runnable(message, report_path=None, tables=None):
    """The unknown-platform message with its ``ipcmatrix bless`` line made runnable as printed:
    the report's real path instead of ``REPORT.json``, and the run's ``--tables`` directory."""
    if not message:
        return message
    command = "ipcmatrix bless " + (shlex.quote(str(report_path)) if report_path else "REPORT.json")
    if tables:
        command += f" --tables {shlex.quote(str(tables))}"
    return message.replace("ipcmatrix bless REPORT.json", command)


def evidence_line(report):
    """``expectations: 12 observed, 20 reported, 107 source only``: how this platform's
    expectations checked in the run are known."""
    counts = view.evidence_counts(report)
    if not sum(counts.values()):
        return "expectations: none checked (no table describes this platform)"
    words = f"{counts['observed']} observed, {counts['reported']} reported, " \
            f"{counts['source']} source only"
    if counts.get("unstated"):
        words += f", {counts['unstated']} with no evidence stated"
    return f"expectations ({report.get('table') or 'no table'}): {words}"


def summary_lines(report, report_path=None, tables=None):
    """A short readable summary: the platform, the counts, then every key that did not match.

    With the report's path (and the run's tables directory), the command that records an
    unknown platform is printed ready to run."""
    platform = report["platform"]
    counts = report["summary"]
    lines = [f"ipcmatrix {report['kit']['version']} on {platform.get('system')} "
             f"{platform.get('release')} {platform.get('machine')} "
             f"(table: {report.get('table') or 'none'})",
             "  " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts.get(v))]
    lines.append("  " + evidence_line(report))
    if not report.get("complete", True):
        lines.append("  INCOMPLETE: the run was interrupted; the report holds what was measured")
    if report.get("unknown_platform"):
        message = runnable(report["unknown_platform"], report_path, tables)
        lines.append("  " + message.replace("\n", "\n  "))
    for key, record in report["observations"].items():
        if record["verdict"] in ("match", "no-expectation"):
            continue
        shown = record["value"] if "value" in record else record.get("error")
        shown = view.show(shown) if "value" in record else view.text(shown)
        lines.append(f"  {view.text(record['verdict']).upper():9} {view.text(key)}: {shown}"
                     + (f" (expected {view.show(record.get('expected'))})"
                        if record["verdict"] == "mismatch" else ""))
    for family, probe in report.get("probes", {}).items():
        leaks = (probe.get("left_processes", []) + probe.get("left_files", [])
                 + probe.get("left_ipc_objects", []))
        if leaks:
            lines.append(f"  LEFT BEHIND by {family} (removed): {leaks}")
    return lines


def closing_lines(report, report_path=None, tables=None, write_error=""):
    """What a run prints once it is over, as (text, colour or None): the summary, then
    what the reader must act on (a slow machine, timeouts, a stop), then where the
    report went."""
    lines = [(line, None) for line in summary_lines(report, report_path, tables)]
    slow = report.get("run", {}).get("slow_machine")
    if slow:
        lines.append((f"  SLOW MACHINE: {slow}", "yellow"))
    hints = {r["hint"] for r in report["observations"].values() if r.get("hint")}
    lines += [(f"  TIMEOUTS: {hint}", "yellow") for hint in sorted(hints)]
    stopped = report.get("run", {}).get("stopped")
    if stopped:
        lines.append((f"  STOPPED: {stopped}", "red"))
    if write_error:
        lines.append((f"ERROR: {write_error}", "red"))
    elif report_path:
        where = "standard output" if str(report_path) == STDOUT else report_path
        lines.append((f"report written to {where}", None))
    return lines
