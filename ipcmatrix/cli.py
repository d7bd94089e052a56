"""The ``ipcmatrix`` command: run the conformance suites, one probe, or list what is measured.

Each subcommand is a small function ``cmd_<name>(args) -> exit status``; ``COMMANDS``
maps names to (function, help, argument setup) so new subcommands are one entry each.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipcmatrix import __version__, catalogue, expectations, report, runner
from ipcmatrix.platform import identify

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


def default_report_path():
    return Path.cwd() / "reports" / report.default_name(identify())


# --- run ---------------------------------------------------------------------------------

def setup_run(parser):
    parser.add_argument("--json", metavar="PATH", type=Path,
                        help="where to write the JSON report (default: reports/<platform>.json)")
    parser.add_argument("-n", "--workers", default="auto",
                        help="parallel pytest-xdist workers (default: auto; 0 runs in-process)")
    parser.add_argument("-k", "--family", action="append", default=[],
                        help="only this probe family (repeatable)")
    parser.add_argument("--tables", metavar="DIR", help="expectation tables directory")
    parser.add_argument("--timeout-multiplier", type=float, default=1.0, metavar="X",
                        help="scale every probe deadline by X (slow machines)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")


def pytest_arguments(args):
    """The pytest command line ``run`` uses; also what the README's test command runs."""
    json_path = args.json or default_report_path()
    arguments = [str(SUITES_DIR), "-p", "ipcmatrix.plugin", "-p", "no:cacheprovider", "-q",
                 "-rfEs", f"--ipcmatrix-json={json_path}",
                 f"--ipcmatrix-timeout-multiplier={args.timeout_multiplier}"]
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
    import pytest
    return int(pytest.main(pytest_arguments(args)))


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


COMMANDS = {
    "run": (cmd_run, "run every probe, check it against this platform's table, write the report", setup_run),
    "probe": (cmd_probe, "run one probe family and print its raw JSON", setup_probe),
    "list": (cmd_list, "list the observation keys with the claim each tests", setup_list),
    "check": (cmd_check, "check the expectation tables for mistakes", setup_check),
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
