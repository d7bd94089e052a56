"""The options of ``ipcmatrix run`` and the checks on their values.

Apart from the command line's module, which imports the whole kit, so that a run can read
its options and begin measuring before that (``ipcmatrix.start``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parent / "tables"   # the kit's own (expectations.TABLES_DIR)


def positive_number(text):
    """--timeout-multiplier: a finite number above zero (0, -1, nan and inf scale nothing)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number above 0, like 2 or 0.5 (got {text!r})")
    return value


def tables_directory(text):
    """--tables DIR: an existing directory (a missing one is a typo, not an unknown platform)."""
    path = Path(text)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(
            f"{text} {what}; give the directory holding the <platform>.toml tables "
            f"(the kit's own: {TABLES_DIR})")
    return str(path)


def setup_run(parser):
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the JSON report (default: "
                             "reports/<platform>-<release>-<machine>.json in the current directory; "
                             "'-': standard output, pytest's own output then goes to standard "
                             "error); only a regular file is ever replaced")
    parser.add_argument("-n", "--workers", default="0",
                        help="run the suites under pytest with N pytest-xdist workers (default: "
                             "0, judged in-process without pytest: the session already measures "
                             "the families side by side)")
    parser.add_argument("--assert-timings", action="store_true",
                        help="fail the run when a timing claim (speed.*) did not hold; by default "
                             "timings are reported, never a reason for a red run")
    parser.add_argument("-k", "--family", action="append", default=[],
                        help="only this probe family (repeatable)")
    parser.add_argument("--tables", metavar="DIR", type=tables_directory,
                        help="expectation tables directory")
    parser.add_argument("--timeout-multiplier", type=positive_number, default=1.0, metavar="X",
                        help="scale every probe deadline by X > 0 (slow machines)")
    parser.add_argument("pytest_args", nargs="*",
                        help="pytest arguments, after --: the suites then run under pytest "
                             "(ipcmatrix run -- --junitxml=j.xml)")


def run_options(argv):
    """``ipcmatrix run``'s options from ``argv`` (what follows ``run``), or None if they do
    not parse: the command line then says what is wrong, once."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    setup_run(parser)
    try:
        options, _unknown = parser.parse_known_args(argv)
    except (argparse.ArgumentError, argparse.ArgumentTypeError, ValueError, TypeError, SystemExit):
        return None
    return options
