"""The speed probe: ratios come from the throughputs it records, it is quick, it cannot hang."""
import os
import signal
import sys
import time

import pytest

from ipcmatrix import runner
from ipcmatrix.probes import harness, speed
from probe_runs import values_of

FAMILY = "speed"
DEADLINE = 20
MEASURING_S = len(speed.STREAMS) * speed.ROUNDS * speed.ROUND_S


def check_ratios_follow_details(run):
    values = values_of(run)
    for key, numerator, denominator in (("speed.unix_stream_over_tcp", "unix_stream", "tcp"),
                                        ("speed.unix_stream_over_pipe", "unix_stream", "pipe")):
        detail = run.observations[key]["detail"]
        assert detail["block_bytes"] == speed.BLOCK
        expected = detail[f"{numerator}_bytes_per_s"] / detail[f"{denominator}_bytes_per_s"]
        assert values[key] == round(expected, 2)
    for key in ("speed.unix_dgram_roundtrip_us", "speed.tcp_roundtrip_us"):
        detail = run.observations[key]["detail"]
        assert detail["trips"] == speed.TRIPS * speed.TRIP_ROUNDS
        assert detail["fastest_us"] <= values[key]
    return values


def test_a_real_run_reports_ratios_of_its_own_throughputs_within_its_time():
    run = runner.run(FAMILY, DEADLINE)
    check_ratios_follow_details(run)
    pinned = {run.observations[k]["detail"]["pinned_cpu"] for k in run.observations}
    if sys.platform.startswith("linux"):
        assert pinned == {min(os.sched_getaffinity(0))}
    # 0.3 s of measuring; the rest (connections, fork, round trips) must stay small.
    assert run.elapsed_s < MEASURING_S + 1.0, run.elapsed_s


def test_without_cpu_affinity_the_run_is_unpinned_and_still_consistent():
    run = runner.run(FAMILY, DEADLINE, env={**os.environ, harness.ENV_HIDE: "os.sched_setaffinity"})
    check_ratios_follow_details(run)
    assert {run.observations[k]["detail"]["pinned_cpu"] for k in run.observations} == {None}


@pytest.mark.parametrize("speeds, over_tcp, over_pipe", [
    ({"unix_stream": 300, "tcp": 100, "pipe": 150}, 3.0, 2.0),
    ({"unix_stream": 100, "tcp": 400, "pipe": 100}, 0.25, 1.0),
])
def test_ratios_are_computed_from_the_measured_throughputs(monkeypatch, speeds, over_tcp, over_pipe):
    made_up = {"throughput": speeds, "seconds": {t: 0.1 for t in speeds}, "pinned_cpu": None,
               "trips": {"unix_dgram": [3.0, 1.0, 2.0], "tcp": [10.0, 30.0, 20.0]}}
    monkeypatch.setattr(speed, "measure_all", lambda: made_up)
    assert speed.unix_stream_over_tcp().value == over_tcp
    assert speed.unix_stream_over_pipe().detail["pipe_bytes_per_s"] == speeds["pipe"]
    assert speed.unix_stream_over_pipe().value == over_pipe
    assert speed.unix_dgram_roundtrip_us().value == 2.0
    assert speed.tcp_roundtrip_us().value == 20.0


def stalled_sink(fd, buffer):
    """A reader that never reads: it waits for a signal, and only its alarm comes."""
    signal.pause()


def test_a_stalled_reader_ends_the_run_within_its_lifetime(monkeypatch):
    """The child's own alarm bounds the parent's writes: a reader that never reads cannot hang us."""
    monkeypatch.setattr(speed, "CHILD_LIFETIME_S", 0.5)
    monkeypatch.setattr(speed, "sink", stalled_sink)
    started = time.monotonic()
    with pytest.raises((OSError, harness.Unmeasurable)):
        speed.measure_all.__wrapped__()
    assert time.monotonic() - started < 2.0
