"""The ``ipcmatrix`` command's entry point: a run begins measuring before the kit is imported.

Importing the kit and reading the tables take a run's first tenth of a second or more,
on one CPU.  The families whose values are timings must run with no other probe beside
them, and one busy CPU beside them moves none of their figures (see
``session.Conformance.prefetch``), so ``ipcmatrix run`` starts them first, then
imports the rest of the kit and reads its tables, instead of running them after
everything else.  Every other command goes straight to ``ipcmatrix.cli``.
"""
import os
import signal
import sys


def _leave_quietly(signum, frame):
    raise SystemExit(128 + signum)


_leave_quietly.placeholder = True   # runner.end_on_signals replaces it


def leave_quietly_while_importing():
    """Until a command installs its own handlers (a run: runner.end_on_signals), an
    interrupt while the kit is still importing leaves at once, with no traceback of the
    import.  A handler someone else installed is left alone."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _leave_quietly)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    leave_quietly_while_importing()
    begun = None
    try:
        try:
            begun = begin_run(argv)
            from ipcmatrix import cli
        except (MemoryError, ImportError) as exc:   # a tight ulimit -v, as the kit loads
            could_not_start(exc)
        status = cli.main(argv, begun=begun)
    finally:
        if begun:   # a run removes its session as it ends; this is for one that never began
                    # (bad arguments, an interrupt while the kit imports)
            from ipcmatrix import session
            session.stop_early(begun)
            import shutil
            shutil.rmtree(begun, ignore_errors=True)
    if argv[:1] == ["run"] and sys.modules.get("pytest") is None:
        leave(status)
    return status


def could_not_start(exc):
    """Out of memory (or a module that could not load for want of it) before the command
    could begin: one line saying so, exit 3, no traceback."""
    try:
        from ipcmatrix import resources
        words = resources.find_in(exc)
    except MemoryError:
        words = ""
    if isinstance(exc, ImportError) and not words:
        raise exc
    sys.stderr.write(f"ipcmatrix: could not start: {words or 'ran out of memory'}\n")
    raise SystemExit(3) from None


def leave(status):
    """End a run now that all is written and every probe is gone: the interpreter's own
    teardown of everything a run imports is a few hundredths of a second, spent on nothing
    (and the launcher, which atexit would end, is ended here)."""
    import contextlib
    from ipcmatrix import launcher
    launcher.LAUNCHER.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):   # a reader gone: nothing to tell it
            stream.flush()
    os._exit(status if isinstance(status, int) else 1)


def begin_run(argv):
    """For ``ipcmatrix run``: start the launcher, the interpreter's start timing and the
    families that run alone; the session directory, or None (anything else, or a run
    that will not measure early: the command then does all of it)."""
    if argv[:1] != ["run"]:
        return None
    from ipcmatrix import options
    args = options.run_options(argv[1:])
    if args is None or {"--collect-only", "--co"} & set(args.pytest_args):
        return None
    from ipcmatrix import launcher, machine, resources
    if resources.address_space_limited() or resources.short_of_space():
        return None
    launcher.warm_up()
    machine.time_interpreter_start()
    from ipcmatrix import catalogue, session
    known = catalogue.families()
    families = [f for f in args.family or known if f in known]
    together = [f for f in families if not catalogue.runs_alone(f)]
    workers = int(args.workers) if str(args.workers).isdigit() else 0
    if not families or resources.short_of_fds(len(together), workers):
        return None
    try:
        return session.begin(families, args.tables, args.timeout_multiplier, args.assert_timings)
    except (OSError, RuntimeError, MemoryError):
        # Out of fds, space or threads: the command starts over without it, and names
        # what ran out if it runs out again.
        begun = session.started_early()
        if begun:
            session.stop_early(begun)
            import shutil
            shutil.rmtree(begun, ignore_errors=True)
        return None
