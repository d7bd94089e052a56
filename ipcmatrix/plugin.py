"""The pytest plugin: a shared conformance session, per-platform timeouts, and the report.

Workers (pytest-xdist) measure and judge; each judged record rides back to the
controller on its test report (``user_properties``).  Only the controller writes files,
and it writes the report even when the run is interrupted, marked incomplete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from ipcmatrix import catalogue, expectations, render_markdown, report, resources, view
from ipcmatrix.session import Conformance
from ipcmatrix.suite import RECORD_PROPERTY

SESSION_DIR = "ipcmatrix_session_dir"
STATE = pytest.StashKey["State"]()


class State:
    def __init__(self, session_dir, owner):
        self.session_dir = session_dir
        self.owner = owner              # the controller made the directory and removes it
        self.records = {}
        self.started = report.now()
        self.report = None
        self.conformance = None
        self.prefetching = None         # the thread measuring families ahead of the tests

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
                timeout_multiplier=config.getoption("ipcmatrix_timeout_multiplier"))
        return self.conformance


def pytest_addoption(parser):
    group = parser.getgroup("ipcmatrix", "ipcmatrix conformance runs")
    group.addoption("--ipcmatrix-json", metavar="PATH", help="write the JSON behaviour report here")
    group.addoption("--ipcmatrix-tables", metavar="DIR", help="expectation tables directory")
    group.addoption("--ipcmatrix-timeout-multiplier", metavar="X", type=float, default=1.0,
                    help="scale every probe deadline (slow or loaded machines)")
    group.addoption("--ipcmatrix-prefetch", metavar="FAMILIES", default="",
                    help="measure these families (comma list, or 'all') as the session starts, "
                         "side by side, before any test asks")


def pytest_configure(config):
    config.addinivalue_line("markers", "ipcmatrix_family(name): the probe family a test checks")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and SESSION_DIR in workerinput:
        state = State(workerinput[SESSION_DIR], owner=False)
    else:
        state = State(tempfile.mkdtemp(prefix="ipcmatrix-session-"), owner=True)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "ipcmatrix-state")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker shares the controller's session directory."""
    node.workerinput[SESSION_DIR] = node.config.stash[STATE].session_dir


def pytest_unconfigure(config):
    state = config.stash.get(STATE, None)
    if state and state.prefetching is not None:
        state.prefetching.join()  # a session that broke off early: its probes still write here
    if state and state.owner:
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
    """The owner (controller, or the only process) starts measuring while workers boot."""
    config = session.config
    state = config.stash[STATE]
    wanted = config.getoption("ipcmatrix_prefetch")
    if not state.owner or not wanted or config.option.collectonly:
        return
    families = catalogue.families() if wanted == "all" else wanted.split(",")
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
    state.prefetching = conformance.prefetch(families)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = config.stash[STATE]
    if state.prefetching is not None:
        state.prefetching.join()  # every probe is bounded by its deadline
    if not state.owner or (not state.records and not config.getoption("ipcmatrix_json")):
        return
    try:
        conformance = state.conformance_for(config)
    except expectations.TableError:
        return
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    probes = conformance.cache.finished()
    records = dict(state.records)
    # Keys whose tests never ran (an interrupted run) but whose probe finished still count.
    for family, run in probes.items():
        for key in run.observations:
            if key not in records and key in conformance.observations:
                records[key] = conformance.judge_run(key, run)
    state.report = report.build(
        conformance.platform, records, probes,
        table=conformance.table.path.name if conformance.table else None,
        started=state.started, interrupted=interrupted,
        unknown_platform=conformance.unknown_platform)
    path = config.getoption("ipcmatrix_json")
    if path:
        try:
            report.write(state.report, path)
        except OSError as exc:
            state.write_error = f"could not write the report to {path}: {exc}"


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


def write_step_summary(config, state):
    """On GitHub Actions, append the run's Markdown report to the step's summary."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary or state.report is None:
        return
    text = render_markdown.step_summary(state.report, report_path=config.getoption("ipcmatrix_json"),
                                        tables=config.getoption("ipcmatrix_tables"))
    try:
        with open(summary, "a", encoding="utf-8") as out:
            out.write("\n" + text)
    except OSError as exc:
        state.write_error = f"could not append to GITHUB_STEP_SUMMARY ({summary}): {exc}"


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash[STATE]
    if state.report is None:
        return
    write_step_summary(config, state)
    terminalreporter.section("ipcmatrix")
    for line in report.summary_lines(state.report, config.getoption("ipcmatrix_json"),
                                     config.getoption("ipcmatrix_tables")):
        terminalreporter.write_line(line)
    path = config.getoption("ipcmatrix_json")
    error = getattr(state, "write_error", "")
    if error:
        terminalreporter.write_line(f"ERROR: {error}", red=True)
    elif path:
        terminalreporter.write_line(f"report written to {path}")
