"""The kit benchmark's floor: which waits an observation needs, and how families add up."""
import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "run_benchmark.py"
spec = importlib.util.spec_from_file_location("run_benchmark", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

WINDOW = 0.1


@pytest.mark.parametrize("key, record, seconds", [
    ("dgram.full.blocking_send", {"value": "blocks", "detail": {"window_s": 0.1}}, WINDOW),
    ("net.udp.full.blocking_send", {"value": "ok", "detail": {"window_s": 0.1}}, 0.0),
    ("sync.pipe_token", {"value": True, "detail": {"waited_s": 0.25}}, 0.25),
    ("sem.timedwait", {"value": "ETIMEDOUT", "detail": {"deadline_s": 0.1}}, 0.1),
    ("timeouts.poll.honoured", {"value": True, "detail": {"asked_ms": 20, "elapsed_ms": [20, 21, 22]}},
     0.06),
    ("speed.unix_stream_over_tcp", {"value": 3.5, "detail": {"measured_for_s": 0.3}}, 0.3),
    ("seed.flood.outcome", {"value": "deadlock"}, 2 * WINDOW),
    ("seed.flood.deadlock_threshold",
     {"value": 24, "detail": {"trials": [[1000, "deadlock"], [23, "completed"], [24, "deadlock"]]}},
     2 * WINDOW),
    ("seed.flood.deadlock_threshold", {"value": None}, 0.0),
    ("creds.peer.uid_matches", {"value": True}, 0.0),
])
def test_needed_wait_is_read_from_what_the_observation_reports(key, record, seconds):
    assert bench.needed_wait(key, record, WINDOW)[0] == pytest.approx(seconds)


def test_a_timed_measurement_counts_as_cpu_work_and_a_wait_does_not():
    _, busy = bench.needed_wait("speed.unix_stream_over_tcp", {"detail": {"measured_for_s": 0.3}}, WINDOW)
    _, idle = bench.needed_wait("dgram.full.blocking_send", {"value": "blocks"}, WINDOW)
    assert "busy" in busy and "busy" not in idle
    rows = {"speed": {"start_s": 0.05, "waits_s": 0.3, "busy_s": 0.3, "floor_s": 0.35, "alone_s": 0.4},
            "seed": {"start_s": 0.05, "waits_s": 0.4, "busy_s": 0.0, "floor_s": 0.45, "alone_s": 0.5}}
    assert bench.run_floors(rows, 2, cpus=1)["concurrent_s"] == pytest.approx(0.45)  # longest
    assert bench.run_floors({**rows, **{str(n): rows["speed"] for n in range(3)}}, 2, cpus=1)[
        "concurrent_s"] == pytest.approx(4 * 0.35 + 0.05)                              # CPU work


def test_the_floor_is_a_sum_at_one_worker_and_a_critical_path_at_several():
    rows = {name: {"start_s": 0.05, "waits_s": waits, "floor_s": 0.05 + waits, "alone_s": 0.1}
            for name, waits in (("a", 0.0), ("b", 0.1), ("c", 0.9))}
    at_two = bench.run_floors(rows, 2, cpus=2)
    assert at_two["serial_s"] == pytest.approx(0.05 + 0.15 + 0.95)
    assert at_two["parallel_s"] == pytest.approx(0.95)        # the longest family
    assert at_two["concurrent_s"] == pytest.approx(0.95)      # waits overlap: the longest again
    even = bench.run_floors({name: rows["b"] for name in "abcd"}, 2, cpus=2)
    assert even["parallel_s"] == pytest.approx(4 * 0.15 / 2)  # no family dominates: sum / workers
    assert even["concurrent_s"] == pytest.approx(0.15)        # 4 starts of 0.05 s on 2 CPUs < 0.15
    many = bench.run_floors({str(n): rows["a"] for n in range(10)}, 2, cpus=2)
    assert many["concurrent_s"] == pytest.approx(10 * 0.05 / 2)  # starts need a CPU each
