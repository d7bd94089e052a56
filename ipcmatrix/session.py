"""A conformance session: this platform, its table, and each probe family run once.

Several pytest-xdist workers share one session directory.  Whichever process first needs
a family runs its probe under a file lock and leaves the result there; the others read
it.  So a probe runs once per session however the tests are spread, and a formula may
name a key of another family.

``prefetch`` measures the selected families as soon as the session starts, side by side
(a probe mostly waits: on an interpreter starting, on bounded windows), so the tests
only read.  Families whose answers are timings run afterwards, beside each other only.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

from ipcmatrix import catalogue, expectations, runner
from ipcmatrix.machine import (SLOW_START_S, interpreter_start_s, multiplier_for,  # noqa: F401
                               time_interpreter_start, timed_interpreter_start)
from ipcmatrix.platform import formula_names, identify
from ipcmatrix.probes import harness


def is_timing(family):
    """Whether a family's values are timings (its module sets ``TIMINGS = True``): judged,
    reported, never a reason for a red run."""
    try:
        return bool(getattr(importlib.import_module(f"ipcmatrix.probes.{family}"), "TIMINGS", False))
    except ImportError:
        return False


class ProbeCache:
    """Probe runs stored as JSON files in a directory shared by the session's processes."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, family):
        return self.directory / f"{family}.json"

    def reserve(self, family):
        """Take the family's lock now; pass it to get_or_run later (in any thread)."""
        lock = open(self.directory / f"{family}.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def get_or_run(self, family, run, reserved=None):
        """The stored run of ``family``, or ``run(family)`` stored, under its lock."""
        path = self.path(family)
        with reserved or self.reserve(family):
            if path.exists():
                return runner.ProbeRun.from_json(json.loads(path.read_text()))
            result = run(family)
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps(result.to_json()))
            os.replace(partial, path)
            return result

    def finished(self):
        """Every probe run stored so far, by family."""
        runs = {}
        for path in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(ValueError, OSError, TypeError):
                runs[path.stem] = runner.ProbeRun.from_json(json.loads(path.read_text()))
        return runs


WAITER_STACK = 512 << 10   # bytes of stack for a thread that runs and waits on one probe


class Conformance:
    """What the suites, the plugin and the command line ask: measure a key, judge it."""

    def __init__(self, cache_dir, tables_dir=None, timeout_multiplier=1.0, platform=None,
                 assert_timings=False, tables=None):
        self.platform = platform or identify()
        self._observations = None
        if tables is None:  # else loaded and checked already (the command line does)
            tables = expectations.load_all(tables_dir, known_keys=set(self.observations))
        self.use_tables(tables)
        self.requested_multiplier = timeout_multiplier
        self.assert_timings = assert_timings    # a timing whose claim did not hold fails its test
        self.cache = ProbeCache(cache_dir)
        self.prefetch_error = None
        # Set once a prefetch has measured everything.  Waiting on it, unlike Thread.join,
        # may be interrupted by a signal safely: an interrupted join (CPython 3.11-3.12,
        # bpo-45274's fix) releases a live thread's lock and marks it stopped, so a
        # later join returns while its probes still run.
        self.prefetched = threading.Event()
        self.prefetched.set()
        self._finished = queue.SimpleQueue()   # each family the prefetch has measured
        self._machine = None

    @property
    def observations(self):
        """Every observation of the kit, by key (read when first needed: importing every
        family takes a while, and a session that starts early measures before)."""
        if self._observations is None:
            self._observations = catalogue.catalogue()
        return self._observations

    def use_tables(self, tables):
        """Judge by the table of ``tables`` that describes this platform (a session begun
        early has only its [platform] block until the command has read the tables)."""
        self.unknown_platform = ""
        try:
            self.table = expectations.table_for(self.platform, tables)
        except expectations.UnknownPlatform as exc:
            self.table, self.unknown_platform = None, str(exc)

    # --- how fast this machine is ---

    def machine(self):
        """This session's measure of the machine, taken once (by whichever process asks
        first) and shared: {"interpreter_start_s", "needed_multiplier"}."""
        if self._machine is None:
            path = self.cache.directory / "machine.json"
            with open(self.cache.directory / "machine.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with contextlib.suppress(OSError, ValueError):
                    self._machine = json.loads(path.read_text())
                if self._machine is None:
                    start = timed_interpreter_start()
                    self._machine = {"interpreter_start_s": start,
                                     "needed_multiplier": multiplier_for(start)}
                    path.write_text(json.dumps(self._machine))
        return self._machine

    @property
    def timeout_multiplier(self):
        """What every bound is scaled by: the one asked for, or more on a machine found slow."""
        return max(self.requested_multiplier, self.machine()["needed_multiplier"])

    def slow_machine_note(self):
        """A sentence for the report when the machine's speed changed the bounds, else ''."""
        machine = self.machine()
        if machine["needed_multiplier"] <= self.requested_multiplier:
            return ""
        return (f"this machine took {machine['interpreter_start_s']:g} s to start a probe "
                f"interpreter (normally under {SLOW_START_S:g} s), so every deadline, window "
                f"and timeout was scaled by {self.timeout_multiplier:g} instead of "
                f"{self.requested_multiplier:g}; pass --timeout-multiplier to choose another")

    def timeout_hint(self):
        """What to try after a timeout: the multiplier this run used, times a few."""
        machine = self.machine()
        suggested = max(2 * self.timeout_multiplier, machine["needed_multiplier"])
        return (f"a probe interpreter started in {machine['interpreter_start_s']:g} s here; if "
                f"this machine is slow or busy, try --timeout-multiplier {suggested:g}")

    # --- settings that come from the platform's table ---

    def setting(self, name):
        source = self.table or expectations.Table(Path("-"), {})
        return source.setting(name)

    @property
    def probe_deadline(self):
        return float(self.setting("probe_deadline_s")) * self.timeout_multiplier

    def probe_environment(self):
        env = dict(os.environ)
        env[harness.ENV_BLOCK_WINDOW] = str(self.setting("block_window_s"))
        env["IPCMATRIX_TIMING_TOLERANCE_MS"] = str(self.setting("timing_tolerance_ms"))
        env[harness.ENV_BUDGET] = str(max(1.0, self.probe_deadline / 2))
        env[harness.ENV_MULTIPLIER] = str(self.timeout_multiplier)
        return env

    # --- measuring and judging ---

    def probe(self, family, reserved=None):
        return self.cache.get_or_run(
            family, lambda f: runner.run(f, self.probe_deadline, env=self.probe_environment()),
            reserved)

    def prefetch(self, families, gate=None):
        """Start measuring ``families`` in the background; returns the thread doing it.

        The families that must run alone go first, beside each other only; the others
        then, side by side, once ``gate`` (an Event) is set, if given: a command that
        begins measuring before it has read the tables opens it once they are read.
        Every family's lock is taken before this returns, so a test that needs one
        waits for the prefetch instead of racing it.
        """
        alone = [(f, self.cache.reserve(f)) for f in families if catalogue.runs_alone(f)]
        together = [(f, self.cache.reserve(f)) for f in families if not catalogue.runs_alone(f)]
        self.prefetched.clear()

        def measure():
            try:
                # The timing families first, beside each other only: neither disturbs the
                # other (speed keeps its two processes on one CPU, timeouts mostly sleeps;
                # 20 runs of the two side by side, 10 beside two CPU-bound processes, kept
                # every timeout within its tolerance).  A command that begins early runs
                # them while it imports and reads its tables: one busy CPU beside speed
                # moved none of its medians (10 runs with and without a CPU-bound process).
                self._side_by_side(alone)
                if gate is not None:
                    gate.wait()
                self._side_by_side(together)
            finally:
                for _family, lock in alone + together:
                    lock.close()   # a family never measured: its test measures it
                self.prefetched.set()

        thread = threading.Thread(target=measure, name="ipcmatrix-prefetch")
        thread.start()
        return thread

    def _side_by_side(self, reserved):
        """Measure each (family, lock) in a thread of its own, and wait for them all."""
        def measure(family, lock):
            try:
                self.probe(family, reserved=lock)
            except (OSError, RuntimeError, MemoryError) as exc:
                # Out of fds, threads or space: kept for the session to report; a test that
                # needs this family measures it again and fails with the reason.
                self.prefetch_error = exc
            finally:
                self._finished.put(family)

        threads = []
        # A thread that waits on a probe needs little stack: a small one keeps twenty of
        # them inside a tight address-space limit (ulimit -v).
        previous = threading.stack_size(WAITER_STACK)
        try:
            for family, lock in reserved:
                thread = threading.Thread(target=measure, args=(family, lock),
                                          name=f"ipcmatrix-{family}")
                try:
                    thread.start()
                except RuntimeError:  # no room for a thread (ulimit -v): measure it here
                    measure(family, lock)
                    continue
                threads.append(thread)
        finally:
            threading.stack_size(previous)
        for thread in threads:
            thread.join()

    def as_measured(self, families, seconds):
        """``families`` in the order their probes finish, so that each can be judged while
        the others still run.  Past ``seconds`` whatever still runs is cancelled (it ends
        at once, with what it measured) and the rest follow; without a prefetch running
        (a session that measures a family when it is judged) they come in the order given."""
        left = list(families)
        end = time.monotonic() + seconds
        while left and not self.prefetched.is_set():
            try:
                family = self._finished.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                runner.cancel_all(f"the run passed its {seconds:g} s run deadline")
                self.prefetched.wait()
                break
            if family in left:
                left.remove(family)
                yield family
        yield from left

    def report(self, records, started=None, interrupted=False):
        """The run's report: the judged ``records``, and every key whose test never ran
        (an interrupted run) but whose probe finished, judged here."""
        from ipcmatrix import report
        probes = self.cache.finished()
        records = dict(records)
        for run in probes.values():
            for key in run.observations:
                if key not in records and key in self.observations:
                    records[key] = self.judge_run(key, run)
        data = report.build(self.platform, records, probes,
                            table=self.table.path.name if self.table else None,
                            started=started, interrupted=interrupted,
                            unknown_platform=self.unknown_platform)
        machine = self.machine()
        data["run"] = {"timeout_multiplier": self.timeout_multiplier,
                       "requested_timeout_multiplier": self.requested_multiplier,
                       "interpreter_start_s": machine["interpreter_start_s"],
                       "slow_machine": self.slow_machine_note() or None,
                       "stopped": runner.CANCELLATION.reason or None}
        return data

    def measured(self, key):
        """The probe's own record for ``key`` (value or error), running its family if needed."""
        observation = self.observations.get(key)
        if observation is None:
            return None
        return self.probe(observation.family).observations.get(key)

    def entry(self, key):
        if self.table is None:
            return None
        return self.table.entry_for(key, self.platform.get("release", ""),
                                    self.platform.get("machine", ""))

    def check(self, key):
        """The judged report record for ``key``: value, expected, verdict, ref, evidence."""
        family = self.observations[key].family
        run = self.probe(family)
        return self.judge_run(key, run)

    def judge_run(self, key, run):
        problem = "" if run.status == "ok" else f"{run.status}: {run.message}"
        from ipcmatrix.verdict import Names, judge   # a session begun early judges later
        names = Names(formula_names(self.platform), self.measured)
        record = judge(key, run.observations.get(key), self.entry(key), names, run.family, problem,
                       system=self.platform.get("system", ""), timing=is_timing(run.family))
        if record["verdict"] in ("error", "timeout") and run.stderr_tail:
            record["stderr_tail"] = run.stderr_tail[-800:]
        timed_out = run.status == "timeout" or "within" in str(record.get("error", ""))
        if timed_out and record["verdict"] in ("error", "timeout"):  # not an expected error
            record["hint"] = self.timeout_hint()
        if self.table is not None:
            record["table"] = self.table.name
        return record


# --- measuring from the moment the command starts ------------------------------------------

_early = {}   # session directory -> (Conformance, prefetch thread), for the plugin to adopt
_gates = {}   # session directory -> the Event a session begun before its tables waits on


def begin(families, tables_dir=None, timeout_multiplier=1.0, assert_timings=False):
    """Begin a session before the tables are read: the families that run alone start at
    once (their probes need only this platform's [platform] block), the others once
    ``start_early`` is given the tables.  Returns the directory, or None where the
    [platform] blocks cannot be read alone (then ``start_early`` does it all)."""
    platform = identify()
    try:
        stub = expectations.platform_table(platform, tables_dir)
    except expectations.UnknownPlatform:
        stub = False   # measured with the defaults, as a session with no table is
    if stub is None:
        return None
    directory = tempfile.mkdtemp(prefix="ipcmatrix-session-")
    _early[directory] = None   # known from here on, so an interrupt finds it to remove
    conformance = Conformance(directory, platform=platform, tables=[stub] if stub else [],
                              timeout_multiplier=timeout_multiplier, assert_timings=assert_timings)
    _gates[directory] = gate = threading.Event()
    _early[directory] = (conformance, conformance.prefetch(families, gate=gate))
    return directory


def start_early(families, tables_dir=None, timeout_multiplier=1.0, assert_timings=False, tables=None,
                begun=None):
    """Measure ``families`` now, before pytest is even imported, in a new session directory
    the run's plugin adopts (``adopt``): the probes run while pytest starts and collects.
    ``begun``: the directory ``begin`` made, whose session now has its tables and goes on.
    Returns the directory; the caller removes it once the run is over."""
    if begun is not None and _early.get(begun):
        conformance, _thread = _early[begun]
        conformance.use_tables(tables if tables is not None else
                               expectations.load_all(tables_dir, known_keys=set(conformance.observations)))
        _open_gate(begun)
        return begun
    directory = tempfile.mkdtemp(prefix="ipcmatrix-session-")
    _early[directory] = None   # known from here on, so an interrupt finds it to remove
    conformance = Conformance(directory, tables_dir=tables_dir, timeout_multiplier=timeout_multiplier,
                              assert_timings=assert_timings, tables=tables)
    _early[directory] = (conformance, conformance.prefetch(families))
    return directory


def _open_gate(directory):
    """A session begun early goes on to its end (cancelled, each family ends at once)."""
    gate = _gates.pop(str(directory), None)
    if gate is not None:
        gate.set()


def started_early():
    """The directory of the session ``start_early`` began in this process, or None."""
    return next(iter(_early), None)


def adopt(directory):
    """The (Conformance, prefetch thread) ``start_early`` began in ``directory``, or None."""
    return _early.get(str(directory))


def stop_early(directory):
    """Cancel what ``start_early`` began in ``directory`` and wait for its probes to be
    killed (a run that could not go on); nothing if nothing was started."""
    started = _early.pop(str(directory), None)
    if started is not None and not started[0].prefetched.is_set():
        runner.cancel_all("the run could not start")
        _open_gate(directory)
        started[0].prefetched.wait()


def finished_early(directory):
    """Stop what was started early (an interrupt before pytest's session began) and return
    the report of what it measured, or None if nothing was started."""
    started = _early.get(str(directory))
    if started is None:
        return None
    conformance, _thread = started
    runner.cancel_all("the run was interrupted")
    _open_gate(directory)
    conformance.prefetched.wait()
    return conformance.report({}, interrupted=True)
