"""Run the full conformance run many times and report every key whose value or verdict
ever changed, unloaded and with every CPU kept busy, and anything left behind after.
Quantities judged against a range (speed) are listed with their spread instead.
Run on demand (not in the test command):

    python3 tests/stress/run_stress.py --runs 30 --loaded
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A quantity judged against a range or a bound (speed ratios, round trips) is expected to
# move from run to run; it counts as a change only if its verdict moves.
LOOSE_RULES = ("range", "at_least", "at_most")


def burn(stop):
    """Keep one CPU busy until told to stop."""
    while not stop.is_set():
        sum(range(10_000))


def one_run(out, workers):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ipcmatrix", "run", "-n", str(workers),
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True)
    return done.returncode, time.monotonic() - started


def leftovers():
    """What a run may leave behind, to compare before and after the series."""
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    return {"workdirs": set(glob.glob("/tmp/ipcm-*")),
            "sessions": set(glob.glob(os.path.join(tempfile.gettempdir(), "ipcmatrix-session-*"))),
            "shm": shm}


def series(runs, workers, loaded):
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=burn, args=(stop,), daemon=True)
               for _ in range(os.cpu_count() or 1)] if loaded else []
    for b in burners:
        b.start()
    seen = defaultdict(lambda: defaultdict(int))     # key -> (value, verdict) -> count
    loose = set()                                    # keys whose rule allows a spread
    times, codes = [], []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for i in range(runs):
                out = Path(scratch) / f"r{i}.json"
                code, elapsed = one_run(out, workers)
                codes.append(code)
                times.append(elapsed)
                data = json.loads(out.read_text())
                for key, record in data["observations"].items():
                    shown = json.dumps([record.get("value", record.get("error")), record["verdict"]])
                    seen[key][shown] += 1
                    if str(record.get("rule", "")).startswith(LOOSE_RULES):
                        loose.add(key)
                print(f"  run {i + 1}/{runs}: exit {code}, {elapsed:.2f} s", flush=True)
    finally:
        stop.set()
        for b in burners:
            b.join()
    verdicts = {key: {json.loads(v)[1] for v in values} for key, values in seen.items()}
    changed = {key: dict(values) for key, values in seen.items()
               if len(verdicts[key]) > 1 or (len(values) > 1 and key not in loose)}
    spread = {key: sorted(json.loads(v)[0] for v in values) for key, values in seen.items()
              if key in loose and key not in changed and len(values) > 1}
    return {"runs": runs, "loaded": loaded, "workers": workers, "exit_codes": codes,
            "seconds": {"min": round(min(times), 2), "max": round(max(times), 2),
                        "mean": round(sum(times) / len(times), 2)},
            "keys": len(seen), "changed": changed,
            "measured_within_rule": {k: [v[0], v[-1]] for k, v in spread.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", default="0", help="-n for each run (0: the default, no pytest)")
    parser.add_argument("--loaded", action="store_true", help="also run a series under full CPU load")
    args = parser.parse_args(argv)
    before = leftovers()
    results = [series(args.runs, args.workers, loaded=False)]
    if args.loaded:
        results.append(series(args.runs, args.workers, loaded=True))
    after = leftovers()
    left = {name: sorted(after[name] - before[name]) for name in after if after[name] - before[name]}
    print(json.dumps({"series": results, "left_behind": left}, indent=1))
    return 1 if left or any(r["changed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
