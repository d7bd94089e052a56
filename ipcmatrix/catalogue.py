"""Every observation the kit can make: its key, its family and the claim it tests.

The probes themselves are the source: a family is a module of ``probes`` (helpers start
with ``_`` or are the harness), and each ``@observation`` function declares a key with
its claim as the first line of its docstring.  Importing a family runs nothing.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

from ipcmatrix import probes
from ipcmatrix.probes import harness


@dataclass(frozen=True)
class Observation:
    key: str
    family: str
    claim: str


def families():
    """Names of the probe families, sorted (``dgram``, ``seed``, ...)."""
    return sorted(info.name for info in pkgutil.iter_modules(probes.__path__)
                  if not info.name.startswith("_") and info.name != "harness")


@functools.cache
def observations_of(family):
    module = importlib.import_module(f"ipcmatrix.probes.{family}")
    return tuple(Observation(key, family, harness.claim_of(fn))
                 for key, fn in harness.observations_of(module))


_RUNS_ALONE = re.compile(r"^RUNS_ALONE\s*=\s*True\b", re.MULTILINE)


@functools.cache
def runs_alone(family):
    """Whether a family's answers are timings that other probes running beside it would
    disturb (its module sets ``RUNS_ALONE = True``).  Read from the module's source, not
    by importing it: a run asks before anything else, to start those families first."""
    path = Path(probes.__path__[0]) / f"{family}.py"
    try:
        return bool(_RUNS_ALONE.search(path.read_text(encoding="utf-8")))
    except OSError:
        return bool(getattr(importlib.import_module(f"ipcmatrix.probes.{family}"), "RUNS_ALONE", False))


@functools.cache
def catalogue():
    """Every observation, keyed by its dotted key."""
    return {obs.key: obs for family in families() for obs in observations_of(family)}
