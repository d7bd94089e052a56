"""Every family measured as an ordinary user matches the same table as a root run."""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.session import Conformance
from probe_runs import values_of

NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="uses setpriv(1) to become another user"),
    pytest.mark.skipif(os.geteuid() != 0, reason="only root can become another user"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv(1) is not installed"),
]


def as_nobody(*argv):
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def python_nobody_can_run():
    """This interpreter if an ordinary user may run it, else the system's (3.11 or newer)."""
    # Some probes start an unrelated interpreter (sys.executable): that must work too.
    check = ("import subprocess, sys; assert sys.version_info >= (3, 11); "
             "subprocess.run([sys.executable, '-I', '-c', 'pass'], check=True)")
    for python in (sys.executable, "/usr/bin/python3"):
        if subprocess.run(as_nobody(python, "-I", "-c", check), capture_output=True).returncode == 0:
            return python
    pytest.skip(f"no Python 3.11+ that uid {NOBODY} may run ({sys.executable} is not reachable)")


def probe_as_nobody(python, family, kit):
    """``python -m probes.<family>`` as nobody, from ``kit``: a copy every user may read (the
    checkout may sit under a 0700 directory)."""
    code = (f"import runpy, sys; sys.path.insert(0, {str(kit)!r}); "
            f"runpy.run_module('probes.{family}', run_name='__main__', alter_sys=True)")
    return runner.run(family, 30, command=as_nobody(python, "-I", "-c", code),
                      owner=(NOBODY, NOBODY))


def test_a_full_measurement_as_an_ordinary_user_matches_the_table(tmp_path, probes_anyone_can_import):
    python = python_nobody_can_run()
    kit = probes_anyone_can_import
    families = catalogue.families()
    together = [f for f in families if not catalogue.runs_alone(f)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(together, pool.map(lambda f: probe_as_nobody(python, f, kit), together)))
    runs.update({f: probe_as_nobody(python, f, kit) for f in families if f not in runs})
    for run in runs.values():
        values_of(run, every_key=True)       # clean: no error, nothing left behind
    conformance = Conformance(tmp_path / "session")
    for family, run in runs.items():         # judge against these runs, not root's
        conformance.cache.get_or_run(family, lambda _, run=run: run)
    verdicts = {key: conformance.check(key) for key in conformance.observations}
    # Timings are reported (verdict "timing"), never a reason for a red run.
    not_matching = {key: (r.get("value"), r.get("expected")) for key, r in verdicts.items()
                    if r["verdict"] not in ("match", "timing")}
    assert {key for key, r in verdicts.items() if r["verdict"] == "timing"} == {
        key for key in verdicts if key.startswith("speed.")}
    assert not_matching == {}
    assert verdicts["names.connect.no_write_permission"]["value"] == "EACCES"
