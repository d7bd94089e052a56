"""The whole conformance run on this machine: every key measured and matching its table,
and nothing left behind — no work directory, shm object, semaphore or process."""
import glob
import os
import subprocess
import sys
from pathlib import Path

import psutil

from ipcmatrix import catalogue, report

REPO = Path(__file__).resolve().parent.parent


def shm_entries():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_a_full_run_matches_the_table_and_leaves_nothing_behind(tmp_path):
    workdirs, shm = set(glob.glob("/tmp/ipcm-*")), shm_entries()
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "ipcmatrix.cli", "run", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    data = report.read(out)
    # Timings are reported (verdict "timing"), never a reason for a red run.
    not_matching = {k: r for k, r in data["observations"].items()
                    if r["verdict"] != "match" and not (r["verdict"] == "timing" and r.get("timing"))}
    assert not_matching == {}, done.stdout[-3000:]
    assert done.returncode == 0
    assert set(data["observations"]) == set(catalogue.catalogue())
    for family, probe in data["probes"].items():
        assert probe["status"] == "ok", (family, probe)
        assert not probe.get("left_files") and not probe.get("left_processes"), (family, probe)
    assert set(glob.glob("/tmp/ipcm-*")) - workdirs == set()
    assert shm_entries() - shm == set()
    assert {p.pid for p in psutil.Process().children(recursive=True)} - children_before == set()
