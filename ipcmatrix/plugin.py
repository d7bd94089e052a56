"""The pytest plugin: a shared conformance session, per-platform timeouts, and the report.

Workers (pytest-xdist) measure and judge; each judged record rides back to the
controller on its test report (``user_properties``).  Only the controller writes files,
and it writes the report even when the run is interrupted, marked incomplete.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading

import pytest

from ipcmatrix import (catalogue, expectations, launcher, render_markdown, report, resources, runner,
                       stopping, view)
from ipcmatrix import session
from ipcmatrix.session import Conformance
from ipcmatrix.suite import RECORD_PROPERTY

SESSION_DIR = "ipcmatrix_session_dir"
STATE = pytest.StashKey["State"]()
REPORT_NOT_WRITTEN = 6      # exit status when the run could not write its report
FULL_TRACE = False          # pytest's --full-trace: then an interrupt's frames are all shown


class State:
    def __init__(self, session_dir, owner):
        self.session_dir = session_dir
        self.owner = owner              # the controller made the directory and removes it
        self.records = {}
        self.started = report.now()
        self.report = None
        self.conformance = None
        self.prefetching = None         # the thread measuring families ahead of the tests
        self.write_error = ""
        self.ended = threading.Lock()   # held by whoever writes the report (once)
        self.written = False
        self.watchdog = None

    def pytest_runtest_logreport(self, report):
        """Collect the judged records workers attach to their test reports."""
        for name, value in getattr(report, "user_properties", ()):
            if name == RECORD_PROPERTY:
                record = json.loads(value)
                self.records[record.pop("key")] = record

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionstart(self, session):
        """A session that cannot start for want of a resource (xdist could not start its
        workers under ``ulimit -n 64``) names it, instead of an INTERNALERROR traceback."""
        try:
            return (yield)
        except Exception as exc:
            words = resources.find_in(exc)
            if not words:
                raise
            raise pytest.exit.Exception(f"ipcmatrix: the run could not start: {words}",
                                        returncode=pytest.ExitCode.INTERNAL_ERROR) from None

    def conformance_for(self, config):
        if self.conformance is None:
            self.conformance = Conformance(
                self.session_dir, tables_dir=config.getoption("ipcmatrix_tables"),
                timeout_multiplier=config.getoption("ipcmatrix_timeout_multiplier"),
                assert_timings=config.getoption("ipcmatrix_assert_timings"))
        return self.conformance


def pytest_addoption(parser):
    group = parser.getgroup("ipcmatrix", "ipcmatrix conformance runs")
    group.addoption("--ipcmatrix-json", metavar="PATH", help="write the JSON behaviour report here")
    group.addoption("--ipcmatrix-tables", metavar="DIR", help="expectation tables directory")
    group.addoption("--ipcmatrix-timeout-multiplier", metavar="X", type=float, default=1.0,
                    help="scale every probe deadline (slow or loaded machines)")
    group.addoption("--ipcmatrix-assert-timings", action="store_true",
                    help="fail a timing test (speed.*) whose claim did not hold; by default a "
                         "timing is reported (verdict 'timing') and never fails the run")
    group.addoption("--ipcmatrix-run-deadline", metavar="S", type=float, default=None,
                    help="end the whole run after S seconds with the report of what was measured "
                         "(default: from the probe deadline and the number of families)")
    group.addoption("--ipcmatrix-session-dir", metavar="DIR", default=None,
                    help="the session directory a run started measuring in before pytest began "
                         "(set by `ipcmatrix run`)")
    group.addoption("--ipcmatrix-prefetch", metavar="FAMILIES", default="",
                    help="measure these families (comma list, or 'all') as the session starts, "
                         "side by side, before any test asks")


def pytest_configure(config):
    config.addinivalue_line("markers", "ipcmatrix_family(name): the probe family a test checks")
    if not config.pluginmanager.hasplugin("xdist"):  # an in-process run: the mark is inert
        config.addinivalue_line("markers", "xdist_group(name): the tests pytest-xdist keeps together")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and SESSION_DIR in workerinput:
        state = State(workerinput[SESSION_DIR], owner=False)
    elif config.getoption("ipcmatrix_session_dir"):
        # ``ipcmatrix run`` began measuring before pytest started: take over that session.
        state = State(config.getoption("ipcmatrix_session_dir"), owner=True)
        state.conformance, state.prefetching = session.adopt(state.session_dir) or (None, None)
    else:
        state = State(tempfile.mkdtemp(prefix="ipcmatrix-session-"), owner=True)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "ipcmatrix-state")
    runner.end_on_signals()
    if workerinput is not None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # see pytest_xdist_setupnodes
    global FULL_TRACE
    FULL_TRACE = bool(getattr(config.option, "fulltrace", False))


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo):
    """Show an interrupt as where it came from (``<SIGTERM>:1: KeyboardInterrupt``), not
    as the frame it happened to land in: pytest renders that frame's source with a search
    of every loaded module, most of a second on a busy machine, and a signalled run must
    be gone within two."""
    if not FULL_TRACE:
        stopping.point_at_the_signal(excinfo)


# xdist workers start with SIGINT (Ctrl-C reaches the whole process group) blocked, so a
# Ctrl-C while one is still importing is held until its pytest_configure, rather than
# killing its interpreter mid-import with a screen of tracebacks.  The controller's other
# threads take the signal meanwhile, so it is never lost there.
INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)  # the workers are started


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist: a worker that died (SIGKILL, OOM) ends the run with what was measured, rather
    than leaving the controller waiting for it (xdist's loadgroup scheduler can hang)."""
    if error:
        sys.stderr.write(f"\nipcmatrix: worker {node.gateway.id} died ({error}); "
                         f"ending the run with the report of what was measured\n")
        runner.cancel_all(f"the run was ended: worker {node.gateway.id} died")
        stopping.interrupt_main_thread()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker shares the controller's session directory."""
    node.workerinput[SESSION_DIR] = node.config.stash[STATE].session_dir


def pytest_unconfigure(config):
    state = config.stash.get(STATE, None)
    if state and state.prefetching is not None:
        state.conformance.prefetched.wait()  # a session that broke off early: its probes still write here
    if state and state.owner:
        if not state.written and (runner.cancelled() or state.prefetching is not None):
            # Interrupted before the session began (pytest then skips sessionfinish): the
            # probes already started are stopped, and what they measured is still written.
            runner.cancel_all("the run was interrupted")
            if state.prefetching is not None:
                state.conformance.prefetched.wait()
            if config.getoption("ipcmatrix_json"):
                finish_report(config, interrupted=True)
        shutil.rmtree(state.session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def conformance(pytestconfig):
    """This run's Conformance: platform, table, and each probe family measured once."""
    try:
        return pytestconfig.stash[STATE].conformance_for(pytestconfig)
    except expectations.TableError as exc:
        pytest.exit(f"ipcmatrix: the expectation tables are malformed:\n{exc}", returncode=3)


def pytest_collection_modifyitems(config, items):
    """Give each conformance test a pytest-timeout backstop scaled to its platform."""
    state = config.stash[STATE]
    try:
        deadline = state.conformance_for(config).probe_deadline
    except expectations.TableError:
        return  # the conformance fixture reports it, once, with every problem listed
    for item in items:
        if item.get_closest_marker("ipcmatrix_family") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(deadline * 2 + 30))


def pytest_report_header(config):
    state = config.stash[STATE]
    try:
        conformance = state.conformance_for(config)
    except expectations.TableError as exc:
        return [f"ipcmatrix: malformed tables: {exc.problems[0]}"]
    platform = conformance.platform
    table = conformance.table.path if conformance.table else "none (unknown platform)"
    return [f"ipcmatrix: {platform['system']} {platform['release']} {platform['machine']}; "
            f"table {table}; probe deadline {conformance.probe_deadline:g} s"]


def pytest_sessionstart(session):
    """The owner (controller, or the only process) starts measuring while workers boot,
    and starts the run's own deadline."""
    config = session.config
    state = config.stash[STATE]
    wanted = config.getoption("ipcmatrix_prefetch")
    asked = wanted or config.getoption("ipcmatrix_run_deadline")
    if not state.owner or not asked or config.option.collectonly:
        return
    families = catalogue.families() if wanted in ("", "all") else wanted.split(",")
    together = [f for f in families if f in catalogue.families() and not catalogue.runs_alone(f)]
    short = resources.short_of_space() or resources.short_of_fds(
        len(together), int(getattr(config.option, "numprocesses", 0) or 0))
    if short:
        raise pytest.exit.Exception(f"ipcmatrix: the run cannot start: {short}",
                                    returncode=pytest.ExitCode.INTERNAL_ERROR)
    unknown = sorted(set(families) - set(catalogue.families()))
    if unknown:
        raise pytest.UsageError(f"--ipcmatrix-prefetch: unknown families {', '.join(unknown)}")
    try:
        conformance = state.conformance_for(config)
    except expectations.TableError:
        return  # the conformance fixture reports it, with every problem
    if wanted and state.prefetching is None:
        state.prefetching = conformance.prefetch(families)
    # A run of the suites (``ipcmatrix run`` prefetches) has a deadline of its own; any
    # other session (the kit's own tests) only when asked.
    seconds = config.getoption("ipcmatrix_run_deadline")
    if wanted and not seconds:
        seconds = stopping.run_deadline(conformance, families)
    if seconds:
        state.watchdog = stopping.Watchdog(seconds, lambda: give_up(config))


def give_up(config):
    """The watchdog's last resort, the main thread being stuck (waiting for a lost worker):
    write the report, kill every process of ours, and exit."""
    state = config.stash[STATE]
    if not finish_report(config, interrupted=True):
        return False  # the normal ending got there first
    launcher.LAUNCHER.close()
    stopping.kill_children()
    shutil.rmtree(state.session_dir, ignore_errors=True)
    path = config.getoption("ipcmatrix_json")
    sys.stderr.write("ipcmatrix: the run did not end by itself; "
                     + (f"ERROR: {state.write_error}\n" if state.write_error
                        else f"report of what was measured written to {path}\n"))
    sys.stderr.flush()
    os._exit(REPORT_NOT_WRITTEN if state.write_error else int(pytest.ExitCode.INTERRUPTED))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = config.stash[STATE]
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or runner.cancelled()
    if interrupted:
        runner.cancel_all("the run was interrupted")
    if state.prefetching is not None:
        state.conformance.prefetched.wait()  # every probe is bounded by its deadline, and now cancelled
    if state.watchdog is not None:
        state.watchdog.cancel()
    if not state.owner or (not state.records and not config.getoption("ipcmatrix_json")):
        return
    finish_report(config, interrupted)
    if state.write_error:
        session.exitstatus = REPORT_NOT_WRITTEN


def finish_report(config, interrupted):
    """Build and write the report, once (the normal ending or the watchdog, whichever
    comes first); False if it was already done."""
    state = config.stash[STATE]
    with state.ended:
        if state.written:
            return False
        state.written = True
        try:
            conformance = state.conformance_for(config)
        except expectations.TableError:
            return True
        state.report = conformance.report(state.records, started=state.started,
                                          interrupted=interrupted)
        path = config.getoption("ipcmatrix_json")
        if path:
            try:
                report.write(state.report, path)
            except OSError as exc:
                state.write_error = f"could not write the report to {path}: {exc}"
        return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """JUnit XML: each key's observed and expected value, verdict and ref as properties."""
    if call.when == "call":
        readable = junit_properties(item.user_properties)
        names = {name for name, _ in item.user_properties}
        item.user_properties.extend(p for p in readable if p[0] not in names)
    yield


def junit_properties(user_properties):
    """(name, text) pairs CI dashboards show, from the judged record a test attached."""
    for name, value in list(user_properties):
        if name != RECORD_PROPERTY:
            continue
        record = json.loads(value)
        row = view.row(record.get("key", ""), record)
        failed = row.kind in ("error", "timeout")
        observed = f"{row.kind}: {row.observed}" if failed else row.observed
        shown = [("observed", observed), ("expected", row.expected), ("verdict", row.verdict),
                 ("rule", row.rule), ("ref", row.ref), ("evidence", row.evidence)]
        return [(label, text) for label, text in shown if text]
    return []


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash[STATE]
    if state.report is None:
        return
    path, tables = config.getoption("ipcmatrix_json"), config.getoption("ipcmatrix_tables")
    state.write_error = state.write_error or render_markdown.append_step_summary(
        state.report, report_path=path, tables=tables)
    terminalreporter.section("ipcmatrix")
    for text, colour in report.closing_lines(state.report, path, tables, state.write_error):
        terminalreporter.write_line(text, **({colour: True} if colour else {}))
