"""The probe harness: outcome names, bounded waits, children, the size search, and main()."""
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ipcmatrix.probes import harness
from probe_runs import children_of_this_test


@pytest.mark.parametrize("number, name", [
    (errno.EWOULDBLOCK, "EAGAIN"), (errno.EAGAIN, "EAGAIN"), (errno.ENOBUFS, "ENOBUFS"),
    (errno.EOPNOTSUPP, "EOPNOTSUPP"), (None, "refused-by-python"), (99999, "E#99999"),
])
def test_errno_names_follow_the_contract(number, name):
    assert harness.errno_name(number) == name


def test_outcome_is_ok_or_the_errno_name():
    assert harness.outcome(os.close, 10 ** 6) == "EBADF"
    assert harness.outcome(lambda: None) == "ok"


def test_a_send_into_a_full_queue_is_recorded_as_blocks_after_the_window():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        while harness.outcome(a.send, b"x") == "ok":
            pass
        a.setblocking(True)
        started = time.monotonic()
        assert harness.bounded_send(a, lambda: a.send(b"x"), window=0.05) == "blocks"
        assert 0.04 <= time.monotonic() - started < 1.0
        assert a.gettimeout() is None  # still a blocking socket, as a C caller has it


def test_a_receive_that_gets_data_returns_it_not_a_verdict():
    a, b = socket.socketpair()
    with a, b:
        a.send(b"hi")
        assert harness.bounded_recv(b, lambda: b.recv(8), window=0.05) == b"hi"
        assert harness.bounded_recv(b, lambda: b.recv(8), window=0.05) == "blocks"


def test_a_child_reports_its_value_its_error_and_its_signal():
    assert harness.in_child(lambda: 6 * 7).value == 42
    assert "ZeroDivisionError" in harness.in_child(lambda: 1 / 0).error
    died = harness.in_child(lambda: os.kill(os.getpid(), signal.SIGPIPE), sigpipe_default=True)
    assert died.signal_name == "SIGPIPE"


def test_a_child_that_never_finishes_is_killed_and_reaped():
    with pytest.raises(harness.Overrun):
        harness.in_child(signal.pause, timeout=0.1)
    assert children_of_this_test() == []   # killed and reaped


def test_the_deadline_interrupts_a_blocked_call():
    with pytest.raises(harness.Overrun):
        with harness.deadline(0.05):
            signal.pause()


def limit_at(largest, error="ENAMETOOLONG"):
    calls = []

    def attempt(size):
        calls.append(size)
        return harness.OK if size <= largest else error
    return attempt, calls


@pytest.mark.parametrize("largest", [12, 13, 31, 37, 255, 256, 1023, 4095])
def test_the_search_finds_the_edge_in_logarithmic_attempts(largest):
    attempt, calls = limit_at(largest)
    found, past, attempts = harness.largest_accepted(attempt, 12, 1 << 20)
    assert (found, past) == (largest, "ENAMETOOLONG")
    assert attempts == len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(largest)) + 2


def test_the_search_refuses_when_even_the_smallest_fails():
    attempt, _ = limit_at(5, "EINVAL")
    with pytest.raises(harness.Unmeasurable, match="EINVAL"):
        harness.largest_accepted(attempt, 12, 1 << 20)


def test_the_search_refuses_when_nothing_is_too_large():
    attempt, _ = limit_at(10 ** 9)
    with pytest.raises(harness.Unmeasurable, match="accepted"):
        harness.largest_accepted(attempt, 12, 64)


def run_family(tmp_path, source, **env):
    """Run a throw-away family module through harness.main(); its JSON document."""
    (tmp_path / "fake_family.py").write_text(source)
    done = subprocess.run([sys.executable, "-c", "import fake_family; from ipcmatrix.probes import harness; "
                           "harness.main(fake_family)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}", **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


FAMILY = '''
import socket
from ipcmatrix.probes.harness import Measured, Unmeasurable, observation

@observation("fake.second")
def second():
    """Declared first."""
    return Measured(2, why="detail")

@observation("fake.first")
def first():
    """Declared after fake.second: keys run in source order, not by name."""
    raise Unmeasurable("cannot here")

@observation("fake.litter")
def litter():
    """Leaves a file in its scratch directory."""
    open("litter", "w").close()
    return socket.SO_SNDBUF
'''


def test_main_reports_values_errors_and_leftovers_and_keeps_going(tmp_path):
    document = run_family(tmp_path, FAMILY)
    observations = document["observations"]
    assert list(observations) == ["fake.second", "fake.first", "fake.litter"]
    assert observations["fake.second"]["value"] == 2
    assert observations["fake.second"]["detail"] == {"why": "detail"}
    assert observations["fake.first"] == {"error": "cannot here", "ms": observations["fake.first"]["ms"]}
    assert observations["fake.litter"]["leftovers"] == ["litter"]


def test_hidden_constants_are_gone_for_the_probe(tmp_path):
    document = run_family(tmp_path, FAMILY, IPCMATRIX_HIDE="socket.SO_SNDBUF")
    assert "AttributeError" in document["observations"]["fake.litter"]["error"]


def test_only_runs_the_keys_asked_for(tmp_path):
    document = run_family(tmp_path, FAMILY, IPCMATRIX_ONLY="fake.second")
    assert list(document["observations"]) == ["fake.second"]
