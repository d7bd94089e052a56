"""The ``ipcmatrix`` command: run the conformance suites, one probe, or list what is measured.

Each subcommand is a small function ``cmd_<name>(args) -> exit status``; ``COMMANDS``
maps names to (function, help, argument setup) so new subcommands are one entry each.
"""
from __future__ import annotations

from ipcmatrix.start import leave_quietly_while_importing

leave_quietly_while_importing()   # before the imports below, on purpose

import argparse  # noqa: E402 - after the handlers, on purpose
import contextlib  # noqa: E402
import difflib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ipcmatrix import resources  # noqa: E402
from ipcmatrix.options import positive_number, setup_run, tables_directory  # noqa: E402,F401

try:
    from ipcmatrix import __version__, catalogue, direct, expectations, report, runner, suites
    from ipcmatrix.platform import identify
except (MemoryError, ImportError) as _exc:  # a tight ulimit -v, as the kit itself loads
    if isinstance(_exc, ImportError) and not resources.find_in(_exc):
        raise
    sys.stderr.write(f"ipcmatrix: could not start: {resources.find_in(_exc) or 'ran out of memory'}\n")
    raise SystemExit(3) from None

SUITES_DIR = Path(suites.__file__).resolve().parent


def default_report_path():
    return Path.cwd() / "reports" / report.default_name(identify())


class Problem(Exception):
    """Bad input: one message for the user (no traceback) and the exit status."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


# --- what the arguments must be ----------------------------------------------------------

def known_family(name):
    """A probe family's name, or a Problem naming the families (and the likeliest one)."""
    families = catalogue.families()
    if name in families:
        return name
    near = difflib.get_close_matches(name, families, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise Problem(f"unknown probe family {name!r}{hint}; families are {', '.join(families)}")


def tables_or_problem(directory, known_keys=None, hint=" (fix them; `ipcmatrix check` checks them)",
                      platform=None):
    """Load the tables for a command (every table; only those of ``platform``'s system if
    given), or a Problem listing every problem with its file:line."""
    try:
        if platform is not None:
            return expectations.load_for(platform, directory, known_keys=known_keys)
        return expectations.load_all(directory, known_keys=known_keys)
    except expectations.TableError as exc:
        lines = "\n".join(f"  {problem}" for problem in exc.problems)
        raise Problem(f"{len(exc.problems)} problem(s) in the expectation tables{hint}:\n{lines}",
                      status=1) from None


def validate_run(args):
    """What would otherwise break the run inside pytest (an xdist INTERNALERROR): unknown
    families, a broken table of this platform's, a missing tables directory, named here,
    once, before it starts.  Returns the tables the run reads, checked."""
    for family in args.family:
        known_family(family)
    return tables_or_problem(args.tables, known_keys=set(catalogue.catalogue()), platform=identify())


# --- run ---------------------------------------------------------------------------------

def pytest_arguments(args):
    """The pytest command line ``run`` uses; also what the README's test command runs."""
    json_path = args.json or default_report_path()
    if args.assert_timings:
        arguments_timings = ["--ipcmatrix-assert-timings"]
    else:
        arguments_timings = []
    families = args.family or catalogue.families()
    # no:tmpdir: the suites never use tmp_path, and without it xdist leaves a
    # pytest-of-<user> directory behind for every run.
    # xdist only where workers are asked for: importing it (and execnet) is a third of a
    # second of CPU that an in-process run would spend beside its probes.
    xdist = ["-p", "xdist"] if wants_workers(args) else []
    arguments = [str(SUITES_DIR), *xdist, "-p", "timeout", "-p", "ipcmatrix.plugin",
                 "-p", "no:cacheprovider", "-p", "no:tmpdir", "-q", "-rfEs",
                 # a checkout's own pytest settings (its tests need xdist) are not the run's
                 "-o", "required_plugins=",
                 f"--ipcmatrix-json={json_path}",
                 f"--ipcmatrix-timeout-multiplier={args.timeout_multiplier}",
                 f"--ipcmatrix-prefetch={','.join(families)}"]
    arguments += arguments_timings
    if args.tables:
        arguments.append(f"--ipcmatrix-tables={args.tables}")
    if str(args.workers) != "0":
        arguments += ["-n", str(args.workers), "--dist", "loadgroup"]
    if args.family:
        for family in args.family:
            known_family(family)
        arguments += [str(SUITES_DIR / f"test_{family}.py") for family in args.family]
        arguments.remove(str(SUITES_DIR))
    return arguments + list(args.pytest_args)


XDIST_OPTIONS = ("-n", "--numprocesses", "--dist", "-d", "--tx", "--maxprocesses", "-f", "--looponfail")


def wants_workers(args):
    """Whether the run needs pytest-xdist: ``-n N`` of ours, or an xdist option after ``--``."""
    given = [a.split("=", 1)[0] for a in args.pytest_args]
    return str(args.workers) != "0" or any(
        a in XDIST_OPTIONS or (a.startswith("-n") and (a[2:].isdigit() or a[2:] in ("auto", "logical")))
        for a in given)


def cmd_run(args):
    """Measure every family and judge every key (in-process, or under pytest when asked);
    exit 0 only if every key matched and the report was written (6: it could not be
    written; 2: interrupted, the report holds what was measured; 3: the run could not
    start for want of a resource, which the message names)."""
    since, started = time.monotonic(), report.now()
    json_path = args.json or default_report_path()
    early = None
    try:
        if not {"--collect-only", "--co"} & set(args.pytest_args):
            from ipcmatrix import launcher, session
            launcher.warm_up()                 # its imports overlap reading the tables
            session.time_interpreter_start()   # beside reading the tables, not after
        tables = validate_run(args)
        runner.end_on_signals()
        report.check_target(json_path)
        arguments = pytest_arguments(args)
        # The probes start now and run while pytest imports, starts and collects.
        early = start_measuring(args, tables)
        if early:
            arguments.append(f"--ipcmatrix-session-dir={early}")
        # Only the plugins the kit needs (named in pytest_arguments): unrelated plugins
        # installed beside it cost the controller and every worker most of a second.
        os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        replaced = previous_report(json_path) if args.json is None else None
        with report_on_stdout(args.json == report.STDOUT):
            if direct.wanted(args):
                status = direct.run(args, judging_session(args, early, tables), json_path,
                                    started, since)
            else:
                import pytest
                status = int(pytest.main(arguments))
        if replaced:
            print(f"ipcmatrix: this replaced the report of the run started {replaced} at "
                  f"{json_path}; give --json PATH to keep both", file=sys.stderr)
        return status
    except report.UnwritablePath as exc:
        print(f"ipcmatrix: --json: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # before pytest's session began
        from ipcmatrix import session
        # Everything is being cancelled already: a second signal would only lose the report.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        early = early or session.started_early()   # the signal may come as it starts
        stopped = interrupted_before_start(json_path, exc, early)
    except (ImportError, MemoryError, OSError, RuntimeError) as exc:
        words = resources.find_in(exc)
        if not words:
            raise
        print(f"ipcmatrix: the run could not start: {words}", file=sys.stderr)
        return 3
    finally:
        from ipcmatrix import session
        for directory in filter(None, {early, session.started_early()}):
            session.stop_early(directory)  # whatever pytest did not take over ends here
            shutil.rmtree(directory, ignore_errors=True)
        for directory in SCRATCH:
            shutil.rmtree(directory, ignore_errors=True)
    # Interrupted inside pytest's import, the interpreter may still count the interrupt as
    # unhandled and end the process by SIGINT (exit -2) on its way out; the report is
    # written and every probe is gone, so leave with the status the run promises (and
    # with the launcher gone too: leaving this way skips atexit).
    from ipcmatrix import launcher
    launcher.LAUNCHER.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(stopped)


def judging_session(args, early, tables):
    """The run's Conformance: the one measuring since the start, else (a tight ``ulimit -v``)
    one that measures each family when its keys are judged, in a directory of its own."""
    from ipcmatrix import session
    if early:
        return session.adopt(early)[0]
    short = resources.short_of_space() or resources.short_of_fds(1, 0)
    if short:
        raise Problem(f"the run cannot start: {short}", status=3)
    directory = tempfile.mkdtemp(prefix="ipcmatrix-session-")
    SCRATCH.append(directory)
    return session.Conformance(directory, tables_dir=args.tables, tables=tables,
                               timeout_multiplier=args.timeout_multiplier,
                               assert_timings=args.assert_timings)


SCRATCH = []   # session directories made here, removed when the run ends


def previous_report(path):
    """When the report at the default path was started, if one is there (a run about to
    replace it says so), else None."""
    try:
        started = json.loads(Path(path).read_text(encoding="utf-8")).get("started")
    except (OSError, ValueError, AttributeError):
        return None
    return started if isinstance(started, str) else "at an unknown time"


def start_measuring(args, tables=None):
    """Start the run's probes before pytest (a session directory for the plugin to adopt),
    unless pytest is only to collect, or the run cannot start for want of a resource
    (the plugin then says which)."""
    from ipcmatrix import session
    begun = getattr(args, "begun", None)
    if begun:   # begun by ipcmatrix.start, which checked all that follows: it goes on
        return session.start_early(args.family or catalogue.families(), args.tables,
                                   tables=tables, begun=begun)
    if {"--collect-only", "--co"} & set(args.pytest_args) or resources.address_space_limited():
        return None  # a tight ulimit -v: the plain path, which names the limit if it is hit
    families = args.family or catalogue.families()
    together = [f for f in families if not catalogue.runs_alone(f)]
    workers = 0 if str(args.workers) in ("0", "auto", "logical") else int(args.workers)
    if resources.short_of_space() or resources.short_of_fds(len(together), workers):
        return None
    return session.start_early(families, args.tables, args.timeout_multiplier, args.assert_timings,
                               tables=tables)


def interrupted_before_start(json_path, signal_name, early=None):
    """The report of a run stopped before pytest's session began: incomplete, with what the
    probes started early had measured (nothing, if none had started)."""
    from ipcmatrix import session
    measured = session.finished_early(early) if early else None
    data = measured or report.build(identify(), {}, {}, interrupted=True)
    try:
        report.write(data, json_path)
    except OSError as exc:
        print(f"ipcmatrix: interrupted ({signal_name}); could not write the report to "
              f"{json_path}: {exc}", file=sys.stderr)
        return 6
    what = (f"before the tests began, with {len(data['observations'])} keys measured" if measured
            else "before any probe ran; empty")
    print(f"ipcmatrix: interrupted ({signal_name or 'SIGINT'}) {what}; report written to "
          f"{json_path}", file=sys.stderr)
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
    parser.add_argument("--deadline", type=positive_number, default=None,
                        help="seconds before the probe's process tree is killed (default: table)")


def cmd_probe(args):
    known_family(args.family)
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
    if args.family is not None:
        known_family(args.family)
    for observation in catalogue.catalogue().values():
        if args.family in (None, observation.family):
            print(f"{observation.key:48} {observation.claim}")
    return 0


def setup_check(parser):
    parser.add_argument("tables", nargs="?", type=tables_directory,
                        help="tables directory (default: the kit's)")


def cmd_check(args):
    """Check every table: known keys, refs, evidence, well-formed rules that evaluate."""
    tables = tables_or_problem(args.tables, known_keys=set(catalogue.catalogue()), hint="")
    for table in tables:
        print(f"{table.path}: {len(table.entries)} keys, ok")
    return 0


# --- report, compare, explain, bless ----------------------------------------------------------

def read_reports(paths, version_warning=False):
    """The reports, or None after saying (naming the file) why one cannot be used.

    Verdicts are judged again (a report is untrusted), each correction said as a warning;
    with ``version_warning``, so is a report another version of the kit wrote."""
    try:
        runs = [(str(path), report.read(path)) for path in paths]
    except report.ReportError as exc:
        print(f"ipcmatrix: {exc}", file=sys.stderr)
        return None
    for source, data in runs:
        warnings = report.rejudge(data)
        if version_warning and report.other_version(data):
            warnings.append(report.other_version(data))
        for warning in warnings:
            print(f"ipcmatrix: warning: {source}: {warning}", file=sys.stderr)
    return runs


def emit(text, out):
    """Write ``text`` to the file ``out``, or to standard output for ``-``."""
    if out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise Problem(f"cannot write {out}: {exc.strerror or exc}; nothing written") from None
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


def setup_matrix(parser):
    parser.add_argument("--tables", metavar="DIR", help="expectation tables directory")
    add_outputs(parser)


def cmd_matrix(args):
    """The expected-behaviour matrix, from the tables alone (no run needed)."""
    from ipcmatrix import matrix, render_html, render_markdown
    try:
        known = catalogue.catalogue()
        em = matrix.build(expectations.load_all(args.tables, known_keys=set(known)), known)
    except expectations.TableError as exc:
        print(f"ipcmatrix: the expectation tables are malformed:\n{exc}", file=sys.stderr)
        return 2
    if args.md or not args.html:
        emit(render_markdown.expected_matrix(em), args.md or "-")
    if args.html:
        emit(render_html.expected_matrix(em), args.html)
    return 0


def setup_explain(parser):
    parser.add_argument("key", help="an observation key, e.g. dgram.full.blocking_send")
    parser.add_argument("--report", type=Path, help="also show what this report observed")
    parser.add_argument("--tables", metavar="DIR", type=tables_directory,
                        help="expectation tables directory")


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
    parser.add_argument("--tables", metavar="DIR", type=tables_directory,
                        help="expectation tables directory (it must exist; it may be empty)")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")


def cmd_bless(args):
    from ipcmatrix import bless
    runs = read_reports(args.reports, version_warning=True)
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
        try:
            bless.write(plan)
        except OSError as exc:
            raise Problem(f"cannot write {plan.path}: {exc.strerror or exc}; nothing written") from None
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
    "matrix": (cmd_matrix, "what every platform's table expects of every key, no run needed", setup_matrix),
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


def parse(argv=None):
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:
        hint = ""
        if args.command == "run":
            hint = (f"; pytest's options go after --, as in: ipcmatrix run -- {' '.join(extra)}")
        top.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def main(argv=None, begun=None):
    """The command; ``begun``: the session directory ``ipcmatrix.start`` began a run in."""
    args = parse(argv)
    args.begun = begun if args.command == "run" else None
    try:
        return COMMANDS[args.command][0](args)
    except Problem as exc:
        print(f"ipcmatrix {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        # The reader went away (`ipcmatrix probe speed | head -1`): not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # as a shell reports a process SIGPIPE ended
    except (OSError, MemoryError) as exc:
        words = resources.find_in(exc)
        if not words:
            raise
        print(f"ipcmatrix {args.command}: {words}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # As the installed command starts, with this module as the command line's (imported
    # once: under a tight ulimit -v there is no room for a second copy).
    sys.modules.setdefault("ipcmatrix.cli", sys.modules[__name__])
    from ipcmatrix.start import main as start
    sys.exit(start())
