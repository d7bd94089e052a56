"""The ``ipcmatrix`` command: run the conformance suites, one probe, or list what is measured.

Each subcommand is a small function ``cmd_<name>(args) -> exit status``; ``COMMANDS``
maps names to (function, help, argument setup) so new subcommands are one entry each.
"""
from __future__ import annotations

import signal


def _leave_quietly(signum, frame):
    raise SystemExit(128 + signum)


# Until a command installs its own handlers (a run: runner.end_on_signals), an interrupt
# while the kit is still importing leaves at once, with no traceback of the import.
_leave_quietly.placeholder = True
for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_signum) in (signal.SIG_DFL, signal.default_int_handler):
        signal.signal(_signum, _leave_quietly)

import argparse  # noqa: E402 - after the handlers, on purpose
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ipcmatrix import __version__, catalogue, expectations, report, runner  # noqa: E402
from ipcmatrix.platform import identify  # noqa: E402

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


def default_report_path():
    return Path.cwd() / "reports" / report.default_name(identify())


# --- run ---------------------------------------------------------------------------------

def setup_run(parser):
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the JSON report (default: reports/<platform>.json; "
                             "'-': standard output, pytest's own output then goes to standard "
                             "error); only a regular file is ever replaced")
    parser.add_argument("-n", "--workers", default="0",
                        help="pytest-xdist workers (default: 0, in-process: the session already "
                             "measures the families side by side, and the tests only read)")
    parser.add_argument("--assert-timings", action="store_true",
                        help="fail the run when a timing claim (speed.*) did not hold; by default "
                             "timings are reported, never a reason for a red run")
    parser.add_argument("-k", "--family", action="append", default=[],
                        help="only this probe family (repeatable)")
    parser.add_argument("--tables", metavar="DIR", help="expectation tables directory")
    parser.add_argument("--timeout-multiplier", type=float, default=1.0, metavar="X",
                        help="scale every probe deadline by X (slow machines)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")


def pytest_arguments(args):
    """The pytest command line ``run`` uses; also what the README's test command runs."""
    json_path = args.json or default_report_path()
    if args.assert_timings:
        arguments_timings = ["--ipcmatrix-assert-timings"]
    else:
        arguments_timings = []
    families = args.family or catalogue.families()
    arguments = [str(SUITES_DIR), "-p", "xdist", "-p", "timeout", "-p", "ipcmatrix.plugin",
                 "-p", "no:cacheprovider", "-q", "-rfEs", f"--ipcmatrix-json={json_path}",
                 f"--ipcmatrix-timeout-multiplier={args.timeout_multiplier}",
                 f"--ipcmatrix-prefetch={','.join(families)}"]
    arguments += arguments_timings
    if args.tables:
        arguments.append(f"--ipcmatrix-tables={args.tables}")
    if str(args.workers) != "0":
        arguments += ["-n", str(args.workers), "--dist", "loadgroup"]
    if args.family:
        unknown = sorted(set(args.family) - set(catalogue.families()))
        if unknown:
            raise SystemExit(f"ipcmatrix: unknown family {', '.join(unknown)}; "
                             f"families are {', '.join(catalogue.families())}")
        arguments += [str(SUITES_DIR / f"test_{family}.py") for family in args.family]
        arguments.remove(str(SUITES_DIR))
    return arguments + list(args.pytest_args)


def cmd_run(args):
    """Run the suites; exit 0 only if every key matched and the report was written
    (6: it could not be written; 2: interrupted, the report holds what was measured)."""
    json_path = args.json or default_report_path()
    try:
        runner.end_on_signals()
        report.check_target(json_path)
        arguments = pytest_arguments(args)
        # Only the plugins the kit needs (named in pytest_arguments): unrelated plugins
        # installed beside it cost the controller and every worker most of a second.
        os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        with report_on_stdout(args.json == report.STDOUT):
            import pytest
            return int(pytest.main(arguments))
    except report.UnwritablePath as exc:
        print(f"ipcmatrix: --json: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before pytest's session began: nothing measured
        return interrupted_before_start(json_path, exc)


def interrupted_before_start(json_path, signal_name):
    """The report of a run stopped before any probe ran: incomplete, and empty."""
    empty = report.build(identify(), {}, {}, interrupted=True)
    try:
        report.write(empty, json_path)
    except OSError as exc:
        print(f"ipcmatrix: interrupted ({signal_name}); could not write the report to "
              f"{json_path}: {exc}", file=sys.stderr)
        return 6
    print(f"ipcmatrix: interrupted ({signal_name or 'SIGINT'}) before any probe ran; "
          f"empty report written to {json_path}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def report_on_stdout(wanted):
    """With ``--json -``: pytest writes to standard error, the report alone to standard output."""
    if not wanted:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    os.environ[report.STDOUT_FD_VARIABLE] = str(saved)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.environ.pop(report.STDOUT_FD_VARIABLE, None)


# --- probe -------------------------------------------------------------------------------

def setup_probe(parser):
    parser.add_argument("family", help="probe family, e.g. dgram")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds before the probe's process tree is killed (default: table)")


def cmd_probe(args):
    if args.family not in catalogue.families():
        print(f"ipcmatrix: no probe family {args.family!r}; families are "
              f"{', '.join(catalogue.families())}", file=sys.stderr)
        return 2
    deadline = args.deadline or _table_setting("probe_deadline_s")
    result = runner.run(args.family, deadline)
    print(json.dumps(result.to_json(), indent=1))
    return 0 if result.status == "ok" else 1


def _table_setting(name):
    try:
        table = expectations.table_for(identify(), expectations.load_all())
    except (expectations.TableError, expectations.UnknownPlatform):
        return expectations.PLATFORM_DEFAULTS[name]
    return table.setting(name)


# --- list and check ----------------------------------------------------------------------

def setup_list(parser):
    parser.add_argument("family", nargs="?", help="only this family")


def cmd_list(args):
    for observation in catalogue.catalogue().values():
        if args.family in (None, observation.family):
            print(f"{observation.key:48} {observation.claim}")
    return 0


def setup_check(parser):
    parser.add_argument("tables", nargs="?", help="tables directory (default: the kit's)")


def cmd_check(args):
    """Check every table: known keys, refs, evidence, well-formed rules."""
    try:
        tables = expectations.load_all(args.tables, known_keys=set(catalogue.catalogue()))
    except expectations.TableError as exc:
        print(f"ipcmatrix: {len(exc.problems)} problem(s) in the tables:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for table in tables:
        print(f"{table.path}: {len(table.entries)} keys, ok")
    return 0


# --- report, compare, explain, bless ----------------------------------------------------------

def read_reports(paths):
    """The reports, or None after saying (naming the file) why one cannot be used."""
    try:
        return [(str(path), report.read(path)) for path in paths]
    except report.ReportError as exc:
        print(f"ipcmatrix: {exc}", file=sys.stderr)
        return None


def emit(text, out):
    """Write ``text`` to the file ``out``, or to standard output for ``-``."""
    if out == "-":
        sys.stdout.write(text)
        return
    Path(out).write_text(text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def add_outputs(parser):
    parser.add_argument("--md", metavar="OUT", help="write Markdown to OUT ('-': standard output, "
                        "the default when neither --md nor --html is given)")
    parser.add_argument("--html", metavar="OUT", help="write one self-contained HTML page to OUT")


def setup_report(parser):
    parser.add_argument("report", type=Path, help="a JSON report (from `ipcmatrix run`)")
    add_outputs(parser)


def cmd_report(args):
    from ipcmatrix import render_html, render_markdown
    runs = read_reports([args.report])
    if runs is None:
        return 2
    source, data = runs[0]
    if args.md or not args.html:
        emit(render_markdown.report(data, source), args.md or "-")
    if args.html:
        emit(render_html.report(data, source), args.html)
    return 0


def setup_compare(parser):
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports, one column each")
    parser.add_argument("--different", action="store_true",
                        help="only the keys that differ (HTML: the filter starts on)")
    add_outputs(parser)


def cmd_compare(args):
    from ipcmatrix import compare, render_html, render_markdown
    runs = read_reports(args.reports)
    if runs is None:
        return 2
    m = compare.matrix(runs)
    for warning in m.warnings:
        print(f"ipcmatrix: warning: {warning}", file=sys.stderr)
    if args.md or not args.html:
        emit(render_markdown.matrix(m, different_only=args.different), args.md or "-")
    if args.html:
        emit(render_html.matrix(m, different_only=args.different), args.html)
    return 0


def setup_explain(parser):
    parser.add_argument("key", help="an observation key, e.g. dgram.full.blocking_send")
    parser.add_argument("--report", type=Path, help="also show what this report observed")
    parser.add_argument("--tables", metavar="DIR", help="expectation tables directory")


def cmd_explain(args):
    from ipcmatrix import explain
    data, source = None, ""
    if args.report:
        runs = read_reports([args.report])
        if runs is None:
            return 2
        source, data = runs[0]
    try:
        tables = expectations.load_all(args.tables)
        lines = explain.explain(args.key, tables, data, source)
    except explain.UnknownKey as exc:
        print(f"ipcmatrix: {exc}", file=sys.stderr)
        return 2
    except expectations.TableError as exc:
        print(f"ipcmatrix: the expectation tables are malformed:\n{exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def setup_bless(parser):
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports from one platform")
    parser.add_argument("--platform", metavar="NAME",
                        help="the table to write (NAME.toml); a new one for a platform no table "
                             "describes (default: the table the reports' platform uses)")
    parser.add_argument("--tables", metavar="DIR", help="expectation tables directory")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")


def cmd_bless(args):
    from ipcmatrix import bless
    runs = read_reports(args.reports)
    if runs is None:
        return 2
    try:
        plan = bless.plan([bless.Run(source, data) for source, data in runs], args.tables, args.platform)
    except bless.Refused as exc:
        print("ipcmatrix bless: refused, nothing written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("\n".join(bless.summary_lines(plan)))
    if args.dry_run:
        print("dry run: nothing written")
    elif plan.changes:
        bless.write(plan)
        print(f"wrote {plan.path}")
    else:
        print("nothing to change")
    return 0


COMMANDS = {
    "run": (cmd_run, "run every probe, check it against this platform's table, write the report", setup_run),
    "probe": (cmd_probe, "run one probe family and print its raw JSON", setup_probe),
    "list": (cmd_list, "list the observation keys with the claim each tests", setup_list),
    "check": (cmd_check, "check the expectation tables for mistakes", setup_check),
    "report": (cmd_report, "render a JSON report as Markdown or HTML", setup_report),
    "compare": (cmd_compare, "the cross-platform matrix of several reports", setup_compare),
    "explain": (cmd_explain, "what a key measures, what each platform is expected to do and why",
                setup_explain),
    "bless": (cmd_bless, "record the values reports observed in a platform's expectation table",
              setup_bless),
}


def parser():
    top = argparse.ArgumentParser(prog="ipcmatrix", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"ipcmatrix {__version__}")
    subcommands = top.add_subparsers(dest="command", required=True)
    for name, (_, help_text, setup) in COMMANDS.items():
        setup(subcommands.add_parser(name, help=help_text, description=help_text))
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    return COMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
