"""How fast is the kit itself?  Full-run wall times against the floor they cannot beat.

    python benchmarks/run_benchmark.py [--repeat N] [--workers auto] [--json OUT]

Run on demand; it is not part of the test command.  It prints:

- the wall time of ``ipcmatrix run`` at 1 worker (``-n 0``) and at ``-n auto``;
- each probe family's time: alone (through ``ipcmatrix.runner.run``, interpreter
  start included) and inside each full run (``probes.<family>.elapsed_s`` of its report);
- the floor, and each time's ratio to it.

The floor of one family is what no implementation of its probe can avoid:

    start   starting the probe's interpreter and importing the family: the runner's own
            command for the family, told to measure nothing (``IPCMATRIX_ONLY``), the
            fastest of a few tries since load only adds to it, plus
    waits   the bounded waits its observations need, read from what they report
            (see ``needed_wait``): a ``"blocks"`` value needs one block window, a
            deadlock two looks a window apart, a timing check the timeouts it asks for,
            a throughput measurement its measuring time.  Time a probe spends beyond
            these is overhead, and is listed so it can be found.

A run's floor adds the families up along the path the run must take: at one worker
the families run one after another, so the floor is their **sum**; with W workers it
is the **critical path**, max(longest family, sum / W), since a family is one process
that runs on one worker.  Starting pytest and its workers is deliberately *not* in the
floor: it is the kit's overhead, and is measured separately (``fixed costs``).

Families are discovered (``ipcmatrix.catalogue.families()``), so new ones are included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ipcmatrix import catalogue, runner
from ipcmatrix.session import Conformance
from ipcmatrix.probes import harness

UNEXPLAINED_MS = 20      # per observation: more than this beyond its needed waits is listed
START_TRIES = 5
GOAL = 2.0               # a full run should take at most twice its floor
GOAL_OVER_AT_ONCE = 1.5  # the default run against every family at once with no pytest
GOAL_PER_KEY = 0.5       # ms per key against CPython's ms per unix-socket test
IDLE_PROCESSES = 500     # extra processes the leftover sweep is timed beside


# --- the floor ------------------------------------------------------------------------------

def wall(command, env=None):
    """Seconds a command takes from fork to exit (its output discarded)."""
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - started


def fastest_wall(command, tries=START_TRIES):
    """The least a command took in a few tries: a cost, with the machine's noise left out."""
    return min(wall(command) for _ in range(tries))


def interpreter_start():
    """``python -I -c pass``: the least a probe process can cost."""
    return fastest_wall([sys.executable, "-I", "-c", "pass"])


def family_start(family):
    """The runner's command for the family with nothing to measure: start, imports, exit."""
    env = {**os.environ, harness.ENV_ONLY: "-"}  # no key is called "-"
    return min(wall(runner.probe_command(family), env=env) for _ in range(START_TRIES))


def needed_wait(key, record, window):
    """Seconds of bounded waiting an observation cannot do without, and why (0 if none).

    Read from what the observation reports, so a family declares its waits by recording
    them: ``waited_s`` (a quiet period that proves a waiter is blocked), ``deadline_s`` (a
    timeout that must expire), ``asked_ms`` x trials (timing checks), ``measured_for_s``
    (a timed measurement), or a ``"blocks"`` value (decided only when a window passes).
    """
    detail = record.get("detail") or {}
    value = record.get("value")
    if "measured_for_s" in detail:
        return detail["measured_for_s"], "timed measurement (keeps a CPU busy)"
    if "waited_s" in detail:
        return detail["waited_s"], "quiet period"
    if "deadline_s" in detail:
        return detail["deadline_s"], "timeout that must expire"
    if "asked_ms" in detail:
        trials = len(detail.get("elapsed_ms") or [0])
        return detail["asked_ms"] * trials / 1000, f"{trials} timeout(s) asked"
    if value == "blocks":
        return window, "one block window"
    trials = detail.get("trials") if key.startswith("seed.") else None
    outcomes = [value, *(outcome for _, outcome in trials or ())]
    deadlocks = sum(outcome == "deadlock" for outcome in outcomes)
    if key.startswith("seed.") and deadlocks:
        # seed decides "deadlock" from two looks one window apart with no progress; the
        # flood's own trial appears in both seed keys, so only the outcome key counts it.
        if key == "seed.flood.outcome":
            return 2 * window, "deadlock: two looks a window apart"
        return 2 * window * (deadlocks - 1), "deadlock trials: two looks each"
    return 0.0, ""


def family_alone(family, conformance):
    """Run one family through the runner, as a session would; its run and its needed waits."""
    run = runner.run(family, conformance.probe_deadline, env=conformance.probe_environment())
    window = float(conformance.setting("block_window_s"))
    waits, busy, unexplained = 0.0, 0.0, []
    for key, record in run.observations.items():
        seconds, why = needed_wait(key, record, window)
        waits += seconds
        busy += seconds if "busy" in why else 0.0
        extra = record.get("ms", 0) - seconds * 1000
        if extra > UNEXPLAINED_MS:
            unexplained.append((key, round(record.get("ms", 0), 1), round(extra, 1)))
    probe_ms = sum(record.get("ms", 0) for record in run.observations.values())
    return {"status": run.status, "alone_s": run.elapsed_s, "probe_ms": round(probe_ms, 1),
            "waits_s": round(waits, 3), "busy_s": round(busy, 3), "unexplained": unexplained,
            "keys": len(run.observations)}


# --- full runs ---------------------------------------------------------------------------

def all_at_once(families, conformance):
    """Every family through the runner at the same time: what a run that waits in parallel
    for all its probes, with no pytest around them, would take."""
    env, deadline = conformance.probe_environment(), conformance.probe_deadline
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(families)) as pool:
        runs = list(pool.map(lambda family: runner.run(family, deadline, env=env), families))
    return {"wall_s": time.perf_counter() - started,
            "not_ok": sorted(run.family for run in runs if run.status != "ok")}


def run_floors(rows, workers, cpus=None):
    """A full run's floors from the families' (start + waits).

    serial      one family after another (one worker): the sum;
    parallel    ``workers`` families at a time: max(longest family, sum / workers);
    concurrent  every family at once: max(longest family, CPU work / CPUs), since starting
                interpreters and timed measurements need a CPU and waiting does not.
    """
    serial = sum(row["floor_s"] for row in rows.values())
    longest = max(row["floor_s"] for row in rows.values())
    starts = sum(row["start_s"] for row in rows.values())
    cpu_work = starts + sum(row.get("busy_s", 0.0) for row in rows.values())
    return {"start_sum_s": starts,
            "waits_sum_s": sum(row["waits_s"] for row in rows.values()),
            "alone_sum_s": sum(row["alone_s"] for row in rows.values()),
            "serial_s": serial, "longest_s": longest,
            "parallel_s": max(longest, serial / workers),
            "concurrent_s": max(longest, cpu_work / (cpus or os.cpu_count() or 1))}


def full_run(workers, repeat, extra=()):
    """``ipcmatrix run -n WORKERS``: median wall time, and each family's time in the last run."""
    times, report = [], None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="ipcm-bench-") as scratch:
            path = Path(scratch) / "report.json"
            command = [sys.executable, "-m", "ipcmatrix", "run", "-n", str(workers),
                       "--json", str(path), *(["--", *extra] if extra else [])]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            report = json.loads(path.read_text()) if path.exists() else None
        if report is None:
            raise SystemExit(f"ipcmatrix run -n {workers} wrote no report:\n{done.stdout[-2000:]}")
    return {"wall_s": statistics.median(times), "tries": [round(t, 3) for t in times],
            "exit": done.returncode, "summary": report["summary"],
            "families": {f: p["elapsed_s"] for f, p in report["probes"].items()}}


def fixed_costs():
    """What every run pays before any probe: importing the kit, and pytest collecting it."""
    with tempfile.TemporaryDirectory(prefix="ipcm-bench-") as scratch:
        collect = [sys.executable, "-m", "ipcmatrix", "run", "-n", "0",
                   "--json", str(Path(scratch) / "r.json"), "--", "--collect-only"]
        return {
            "import ipcmatrix (ipcmatrix list)": fastest_wall(
                [sys.executable, "-m", "ipcmatrix", "list"], 3),
            "pytest start + collect (ipcmatrix run -n 0 -- --collect-only)": fastest_wall(collect, 3),
        }


def default_run(repeat):
    """``ipcmatrix run`` exactly as a user types it: what every CI job pays."""
    times, keys = [], 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="ipcm-bench-") as scratch:
            path = Path(scratch) / "report.json"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ipcmatrix", "run", "--json", str(path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
            if not path.exists():
                raise SystemExit("ipcmatrix run (default settings) wrote no report")
            keys = len(json.loads(path.read_text())["observations"])
    return {"wall_s": statistics.median(times), "tries": [round(t, 3) for t in times],
            "keys": keys}


# The nearest peer: CPython's own unix-socket tests, run by unittest in one process.
CPYTHON_SUBSET = """
import inspect, sys, unittest
import test.test_socket as t
names = [n for n, c in vars(t).items() if inspect.isclass(c)
         and issubclass(c, unittest.TestCase) and ("Unix" in n or "SCM" in n)]
suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(getattr(t, n))
                           for n in names)
result = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(suite)
print(result.testsRun)
"""


def cpython_unix_socket_tests(repeat):
    """Wall time of the ``*Unix*`` and ``*SCM*`` classes of ``test.test_socket``, and how many
    tests that is; None where this Python ships without its test suite."""
    times, count = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CPYTHON_SUBSET], capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            return None
        count = int(done.stdout.strip())
    return {"wall_s": statistics.median(times), "tries": [round(t, 3) for t in times],
            "tests": count}


def sweep_cost(extra=IDLE_PROCESSES, tries=3):
    """The runner's leftover sweep on this machine as it is, and beside ``extra`` idle
    processes (a CI runner has hundreds), as it runs after each probe family: looking for
    processes of a probe that started just now."""
    def timed():
        best = float("inf")
        for _ in range(tries):
            probe_started = time.time()
            started = time.perf_counter()
            runner.sweep_processes(runner.new_token(), since=probe_started)
            best = min(best, time.perf_counter() - started)
        return best

    before = timed()
    idle = [subprocess.Popen(["sleep", "120"]) for _ in range(extra)]
    try:
        # The idle processes must be older than the probe, as on a real runner.
        time.sleep(runner.CREATE_TIME_SLACK_S + 0.2)
        beside = timed()
        processes = len(os.listdir("/proc")) if os.path.isdir("/proc/self") else None
    finally:
        for process in idle:
            process.kill()
        for process in idle:
            process.wait()
    return {"as_is_s": before, "beside_idle_s": beside, "idle": extra, "proc_entries": processes}


def worker_count(workers):
    """How many workers ``-n WORKERS`` starts (xdist's own count for ``auto``)."""
    if workers not in ("auto", "logical"):
        return int(workers)
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    import psutil  # as xdist counts: physical cores for auto, logical CPUs for logical
    return psutil.cpu_count(logical=workers == "logical") or psutil.cpu_count() or 1


# --- printing ------------------------------------------------------------------------------------

def ms(seconds):
    return f"{seconds * 1000:8.1f}"


def print_report(result):
    floors = result["floor"]
    print(f"ipcmatrix benchmark: {result['machine']}")
    if result.get("run_args"):
        print(f"full runs with extra pytest arguments: {result['run_args']}")
    print(f"interpreter start (python -I -c pass): {ms(result['interpreter_start_s']).strip()} ms,"
          f" fastest of {START_TRIES}")
    print()
    print(f"{'family':12} {'start':>8} {'waits':>8} {'floor':>8} {'alone':>8} {'probe':>8} "
          f"{'in -n 0':>8} {'in auto':>8} {'alone/floor':>11}   (ms)")
    for family, row in result["families"].items():
        in_serial = result["serial"]["families"].get(family) if result.get("serial") else None
        in_auto = result["parallel"]["families"].get(family) if result.get("parallel") else None
        print(f"{family:12} {ms(row['start_s'])} {ms(row['waits_s'])} {ms(row['floor_s'])} "
              f"{ms(row['alone_s'])} {row['probe_ms']:8.1f} "
              f"{ms(in_serial) if in_serial is not None else '       -'} "
              f"{ms(in_auto) if in_auto is not None else '       -'} "
              f"{row['alone_s'] / row['floor_s']:11.2f}")
    print(f"{'sum':12} {ms(floors['start_sum_s'])} {ms(floors['waits_sum_s'])} "
          f"{ms(floors['serial_s'])} {ms(floors['alone_sum_s'])}")
    print()
    one_process = (("concurrent_s", "every family at once: max(longest family, CPU work / CPUs)")
                   if result["prefetch"] else ("serial_s", "sum of family floors"))
    for name, key, floor_key, how in (
            ("1 worker (-n 0)", "serial", *one_process),
            (f"-n {result['workers']} ({result['worker_count']} workers)", "parallel",
             "parallel_s", "critical path: max(longest family, sum / workers)")):
        run = result.get(key)
        if not run:
            continue
        print(f"full run, {name}: {run['wall_s']:.2f} s (tries {run['tries']}, "
              f"{sum(run['summary'].values())} keys: "
              + ", ".join(f"{n} {v}" for v, n in run["summary"].items() if n) + ")")
        ratio = run["wall_s"] / floors[floor_key]
        print(f"    floor {floors[floor_key]:.2f} s ({how}); ratio to floor {ratio:.2f} "
              f"({'within' if ratio <= GOAL else 'above'} the goal of {GOAL:g}x; "
              f"{run['wall_s'] / floors['serial_s']:.2f}x the sum of family floors)")
    once = result["all_at_once"]
    print(f"all families at once through the runner, no pytest: {once['wall_s']:.2f} s"
          + (f" (not ok: {', '.join(once['not_ok'])})" if once["not_ok"] else "")
          + f"; floors: longest family {floors['longest_s']:.2f} s, "
            f"every family at once {floors['concurrent_s']:.2f} s")
    print()
    print("fixed costs (not in the floor):")
    for name, seconds in result["fixed"].items():
        print(f"    {name}: {seconds:.2f} s")
    print_goals(result)
    slow = [(f, *u) for f, row in result["families"].items() for u in row["unexplained"]]
    if slow:
        print()
        print(f"observations spending more than {UNEXPLAINED_MS} ms beyond their needed waits "
              f"(an experiment shared by several keys shows on the first that reads it):")
        for family, key, took, extra in sorted(slow, key=lambda s: -s[3]):
            print(f"    {key:44} {took:8.1f} ms  ({extra:.1f} ms unexplained)")


def print_goals(result):
    """The two numbers the speed goal is stated in, and the sweep's cost."""
    sweep = result.get("sweep")
    if sweep:
        print(f"    leftover sweep (once per family): {ms(sweep['as_is_s']).strip()} ms as is, "
              f"{ms(sweep['beside_idle_s']).strip()} ms beside {sweep['idle']} idle processes")
    run, peer = result.get("default"), result.get("cpython")
    if not run:
        return
    print()
    over = run["wall_s"] / result["all_at_once"]["wall_s"]
    print(f"default `ipcmatrix run`: {run['wall_s']:.2f} s (tries {run['tries']}), {run['keys']} keys, "
          f"{run['wall_s'] * 1000 / run['keys']:.1f} ms a key")
    print(f"    over every family at once: {over:.2f} "
          f"({'within' if over <= GOAL_OVER_AT_ONCE else 'above'} the goal of {GOAL_OVER_AT_ONCE:g})")
    if peer is None:
        print("    CPython's test.test_socket is not installed with this Python: no per-test comparison")
        return
    per_test = peer["wall_s"] * 1000 / peer["tests"]
    per_key = run["wall_s"] * 1000 / run["keys"]
    print(f"CPython's unix-socket tests (test.test_socket *Unix*/*SCM*, unittest, one process): "
          f"{peer['wall_s']:.2f} s (tries {peer['tries']}), {peer['tests']} tests, {per_test:.1f} ms a test")
    ratio = per_key / per_test
    print(f"    ms a key over CPython's ms a test: {ratio:.2f} "
          f"({'within' if ratio <= GOAL_PER_KEY else 'above'} the goal of {GOAL_PER_KEY:g})")


def measure(args):
    families = catalogue.families()
    with tempfile.TemporaryDirectory(prefix="ipcm-bench-") as scratch:
        conformance = Conformance(scratch)
        start = interpreter_start()
        rows = {}
        for family in families:
            row = family_alone(family, conformance)
            row["start_s"] = family_start(family)
            row["floor_s"] = row["start_s"] + row["waits_s"]
            rows[family] = row
        at_once = all_at_once(families, conformance)
    workers = worker_count(args.workers)
    floor = run_floors(rows, workers)
    result = {"machine": f"{platform.system()} {platform.release()} {platform.machine()}, "
                         f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
                         f"{len(families)} families",
              "interpreter_start_s": start, "families": rows, "floor": floor,
              "all_at_once": at_once, "run_args": args.run_args,
              # a session that measures every family at once (Conformance.prefetch) has
              # the concurrent floor at one worker; otherwise families run one by one
              "prefetch": hasattr(Conformance, "prefetch"),
              "workers": args.workers, "worker_count": workers, "fixed": fixed_costs()}
    if not args.families_only:
        extra = shlex.split(args.run_args)
        result["serial"] = full_run(0, args.repeat, extra)
        result["parallel"] = full_run(args.workers, args.repeat, extra)
        # Side by side: the default run and CPython's tests take turns, so load hits both.
        result["default"], result["cpython"] = {"tries": []}, None
        runs, peers = [], []
        for _ in range(args.repeat):
            runs.append(default_run(1))
            peers.append(cpython_unix_socket_tests(1))
        result["default"] = {"wall_s": statistics.median(r["wall_s"] for r in runs),
                             "tries": [r["tries"][0] for r in runs], "keys": runs[-1]["keys"]}
        if all(peers):
            result["cpython"] = {"wall_s": statistics.median(p["wall_s"] for p in peers),
                                 "tries": [p["tries"][0] for p in peers], "tests": peers[-1]["tests"]}
    if not args.no_sweep:
        result["sweep"] = sweep_cost()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="full runs per worker setting (median)")
    parser.add_argument("--workers", default="auto", help="the parallel setting to compare (-n)")
    parser.add_argument("--families-only", action="store_true", help="skip the two full runs")
    parser.add_argument("--run-args", default="", metavar="ARGS",
                        help="extra pytest arguments for the full runs, e.g. '-p no:hypothesispytest'")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--no-sweep", action="store_true",
                        help=f"skip timing the leftover sweep beside {IDLE_PROCESSES} idle processes")
    args = parser.parse_args(argv)
    result = measure(args)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
