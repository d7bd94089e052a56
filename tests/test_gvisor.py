"""Running where the host's assumptions do not hold: gVisor and kernels older than this one.

A kernel without pidfd_open (Linux before 5.3, gVisor before release-20260504.0), a
C library without sendmmsg, a datagram queue that holds 212,992 datagrams, a platform
that says it is Linux but is gVisor.  The last test runs the whole kit inside runsc
when it is installed.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipcmatrix import catalogue, expectations, platform, runner
from ipcmatrix.probes import _bulk, harness, seed

REPO = Path(__file__).resolve().parent.parent
GVISOR_VERSION = platform.GVISOR_UNAME_VERSION


# --- the runner without pidfd ------------------------------------------------------------

def no_pidfd(pid, flags=0):
    raise OSError(errno.ENOSYS, "Function not implemented")


def sleeper(seconds):
    """A probe that takes ``seconds`` and then prints a valid document."""
    return [sys.executable, "-I", "-c", textwrap.dedent(f"""
        import json, time
        time.sleep({seconds})
        print(json.dumps({{"observations": {{"fake.key": {{"value": 1}}}}}}))
    """)]


def test_without_pidfd_the_runner_still_waits_for_a_live_probe(monkeypatch):
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    result = runner.run("fake", 10, command=sleeper(0.5))
    assert result.status == "ok", result.message
    assert result.observations == {"fake.key": {"value": 1}}
    assert result.elapsed_s >= 0.5


def test_the_pidfd_fake_really_removes_the_event(monkeypatch):
    """Control: the fake is the ENOSYS the runner has to survive, not a no-op."""
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    with pytest.raises(OSError) as raised:
        os.pidfd_open(os.getpid())
    assert raised.value.errno == errno.ENOSYS
    started = time.monotonic()
    process = subprocess.Popen(sleeper(0.3))
    try:
        assert runner._wait_for_exit_event(process.pid, 5, runner.CANCELLATION.fd()) is False
        assert time.monotonic() - started < 0.3   # it did not wait: the fallback must
    finally:
        process.wait()


def test_without_pidfd_a_cancelled_run_still_ends_at_once():
    """A signal that ends the run cancels a probe the runner waits for without an exit event
    (cancellation is once per process, so in a process of its own)."""
    script = textwrap.dedent(f"""
        import errno, json, os, sys, threading
        from ipcmatrix import runner
        def no_pidfd(pid, flags=0):
            raise OSError(errno.ENOSYS, "Function not implemented")
        os.pidfd_open = no_pidfd
        threading.Timer(0.3, runner.cancel_all, ["a test's SIGTERM"]).start()
        result = runner.run("fake", 30, command={sleeper(30)!r})
        print(json.dumps([result.status, result.elapsed_s]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    status, elapsed = json.loads(done.stdout)
    assert status == "interrupted" and elapsed < 3, done.stderr


def test_without_pidfd_a_hung_probe_still_ends_at_its_deadline_with_the_real_time(monkeypatch):
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    started = time.monotonic()
    result = runner.run("fake", 0.5, command=sleeper(30))
    assert time.monotonic() - started < 5
    assert result.status == "timeout"
    assert result.elapsed_s >= 0.5
    assert f"after {result.elapsed_s:g} s" in result.message and "deadline 0.5 s" in result.message


# --- telling gVisor from Linux ---------------------------------------------------------------

def uname(release, version, sysname="Linux"):
    return lambda: SimpleNamespace(sysname=sysname, release=release, version=version,
                                   machine="x86_64")


def no_log():
    raise AssertionError("the kernel log was read on a machine that does not look like gVisor")


GVISOR_LOG = "<6>[   0.000000] Starting gVisor...\n<6>[   0.4] Forking spaghetti code...\n"


@pytest.mark.parametrize("release", ["4.4.0", "4.19.0-gvisor"])
def test_gvisor_is_named_from_inside_whatever_linux_it_pretends_to_be(release):
    block = platform.identify(uname=uname(release, GVISOR_VERSION), proc_sys="/nonexistent",
                              kernel_log=lambda: GVISOR_LOG)
    assert (block["name"], block["system"], block["release"]) == ("gvisor", "gVisor", "")
    assert block["kernel"] == release
    assert block["gvisor"]["release_known"] is False
    assert any("Starting gVisor" in sign for sign in block["gvisor"]["identified_by"])
    assert set(block["tunables"]) == set(platform.TUNABLES["linux"])


def test_a_real_linux_is_linux_and_its_kernel_log_is_never_read():
    block = platform.identify(uname=uname("6.18.44", "#1 SMP PREEMPT_DYNAMIC Debian"),
                              proc_sys="/nonexistent", kernel_log=no_log)
    assert (block["name"], block["system"], block["release"]) == ("linux", "Linux", "6.18.44")
    assert "gvisor" not in block


def test_each_identity_picks_its_own_table():
    tables = expectations.load_all(known_keys=set(catalogue.catalogue()))
    inside = platform.identify(uname=uname("4.4.0", GVISOR_VERSION), proc_sys="/nonexistent",
                               kernel_log=lambda: GVISOR_LOG)
    host = platform.identify(uname=uname("6.18.44", "#1 SMP"), proc_sys="/nonexistent",
                             kernel_log=no_log)
    assert expectations.table_for(inside, tables).path.name == "gvisor.toml"
    assert expectations.table_for(host, tables).path.name == "linux.toml"


ADDITIONS = "# --- dgram: wake-ups"   # the first of the sections each new area adds


def shipped_keys(table):
    """Keys a table has above its additions sections (the 139 the first issues shipped)."""
    text = table.path.read_text().splitlines()
    first_addition = next(n for n, line in enumerate(text, 1) if line.startswith(ADDITIONS))
    return {key for key in table.entries if table.lines[(key, 0, None)] < first_addition}


def test_the_gvisor_table_covers_every_key_linux_shipped_with_a_ref_to_gvisor():
    known = set(catalogue.catalogue())
    gvisor = expectations.load(expectations.TABLES_DIR / "gvisor.toml", known)
    linux = expectations.load(expectations.TABLES_DIR / "linux.toml", known)
    assert len(shipped_keys(linux)) >= 139
    assert shipped_keys(linux) <= set(gvisor.entries)
    for key in shipped_keys(gvisor):
        for entry in gvisor.entries[key]:
            assert entry["ref"].startswith(("pkg/", "test/", "google/gvisor", "glibc", "informational")), key


def test_release_conditioned_gvisor_entries_never_apply_to_a_run_whose_release_is_unknown():
    gvisor = expectations.load(expectations.TABLES_DIR / "gvisor.toml")
    assert gvisor.entry_for("names.autobind", "")["expect"] == "EINVAL"
    assert gvisor.entry_for("names.autobind", "20231016.0")["expect"] == "ok"


# --- filling queues in bulk ------------------------------------------------------------------

def filled_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def fill_and_drain():
    a, b = filled_socketpair()
    with a, b:
        sent, stopped_by = _bulk.fill(a)
        received = _bulk.drain(b)
    return sent, stopped_by, received


def test_a_bulk_fill_counts_what_one_send_at_a_time_counts(monkeypatch):
    bulk = fill_and_drain()
    monkeypatch.setenv("IPCMATRIX_MISSING_SYMBOLS", "sendmmsg,recvmmsg")
    one_by_one = fill_and_drain()
    assert bulk[:2] == one_by_one[:2] and bulk[1] == "EAGAIN"
    assert bulk[0] == len(bulk[2]) and _bulk.in_pattern(bulk[2]) and _bulk.in_pattern(one_by_one[2])


def fill_unconnected():
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind("r")
        try:
            sender.setblocking(False)
            return _bulk.fill(sender, "r")
        finally:
            os.unlink("r")


def test_a_bulk_sendto_reaches_the_named_receiver_as_often_as_single_sendtos(monkeypatch, tmp_path):
    """The sockaddr_un built for sendmmsg names the same socket sendto does."""
    monkeypatch.chdir(tmp_path)
    bulk = fill_unconnected()
    monkeypatch.setenv("IPCMATRIX_MISSING_SYMBOLS", "sendmmsg")
    assert bulk == fill_unconnected() and bulk[0] > 0


def test_a_kernel_without_sendmmsg_falls_back_to_one_send_at_a_time(monkeypatch):
    def enosys(*args):
        ctypes.set_errno(errno.ENOSYS)
        return -1
    monkeypatch.setattr(_bulk, "_mmsg", lambda name: enosys)
    expected = fill_and_drain()
    monkeypatch.undo()
    assert expected[0] > 0 and fill_and_drain()[:2] == expected[:2]


def test_a_fill_that_never_ends_is_a_clear_error_at_its_bound():
    a, b = filled_socketpair()
    with a, b, pytest.raises(harness.Unmeasurable, match=r"still accepted datagrams after 5 "):
        _bulk.fill(a, limit=5)


def test_the_order_check_sees_a_lost_or_repeated_datagram():
    assert _bulk.in_pattern(bytes(range(256)) + b"\0\1")
    assert not _bulk.in_pattern(bytes(range(256)) + b"\1")
    assert not _bulk.in_pattern(b"\0\0\1")


# --- seed: how a stuck run is named ------------------------------------------------------------

@pytest.mark.parametrize("server, client, outcome", [
    (seed.IN_SEND, seed.IN_SEND, "deadlock"),
    (seed.IN_RECV, seed.IN_RECV, "replies-lost"),
    (seed.IN_SEND, seed.IN_RECV, "lost-wakeup"),   # gVisor at 61,273: all sent, server never woken
    (seed.IN_RECV, seed.IN_SEND, "lost-wakeup"),
])
def test_a_stuck_run_is_a_deadlock_only_when_both_sleep_in_sendto(server, client, outcome):
    assert seed.stuck_outcome(server, client) == outcome


# --- the whole kit inside gVisor ---------------------------------------------------------------

def runsc():
    found = shutil.which("runsc")
    if not found:
        pytest.skip("runsc (gVisor) is not installed: apt-get install runsc (Debian) to run the kit inside it")
    return found


def test_a_full_run_inside_gvisor_matches_the_gvisor_table_within_a_minute(tmp_path):
    # The sandbox's writes vanish with it, so the report comes out on stdout.
    script = (f"cd /tmp && {sys.executable} -m ipcmatrix.cli run -n 0 --json /tmp/gvisor.json "
              f">/dev/null 2>&1; cat /tmp/gvisor.json")
    started = time.monotonic()
    done = subprocess.run([runsc(), "--network=none", "do", "/bin/sh", "-c", script],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - started
    if done.returncode != 0 and not done.stdout.strip():
        pytest.skip(f"runsc cannot start a sandbox here: {done.stderr.strip()[-300:]}")
    data = json.loads(done.stdout)
    assert data["platform"]["name"] == "gvisor" and data["table"] == "gvisor.toml"
    # Timings are reported (verdict "timing"), never a reason for a red run.
    not_matching = {k: r for k, r in data["observations"].items()
                    if r["verdict"] not in ("match", "timing")}
    assert not_matching == {}
    assert set(data["observations"]) == set(catalogue.catalogue())
    for family, probe in data["probes"].items():
        assert probe["status"] == "ok", (family, probe)
    assert took < 60, f"the run inside gVisor took {took:.1f} s"


def test_a_server_never_woken_from_its_reply_is_a_lost_wakeup_not_a_deadlock(monkeypatch, tmp_path):
    """gVisor's hang at 61,273 messages, made here: the client has sent everything and
    reads, the server sleeps in its reply although the client's queue has room."""
    monkeypatch.chdir(tmp_path)
    replies = []

    def reply_then_sleep_forever(fd, message, address):
        replies.append(message)
        if len(replies) > 3:
            never_written, _ = os.pipe()
            os.read(never_written, 1)   # asleep inside "sendto", as the sentry leaves it
        fd.sendto(message, address)

    monkeypatch.setattr(seed, "reply", reply_then_sleep_forever)
    result = seed.run_example(8)
    assert result["outcome"] == "lost-wakeup"
    assert (result["sent"], result["received"]) == (8, 3)


def fake_example(edge):
    """run_example of a platform whose queues hold ``edge - 1`` of the client's messages."""
    def run_example(count, overall=10.0):
        if count >= edge:
            return {"outcome": "deadlock", "sent": edge - 1, "room": 0}
        if count == edge - 1:
            return {"outcome": "lost-wakeup", "sent": count}
        return {"outcome": "completed", "sent": count}
    return run_example


def test_room_left_counts_the_sends_a_real_queue_still_takes(monkeypatch, tmp_path):
    """Against a real receiver: all it was asked for while there is room, then no more
    once the receiver's queue is full (whatever bounds it on this kernel)."""
    monkeypatch.chdir(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        server.bind(seed.SERVER_NAME)
        assert seed.room_left(client, 3) == 3
        filled = seed.room_left(client, 1 << 20)
        assert 0 < filled < 1 << 20
        assert seed.room_left(client, 5) == 0


@pytest.mark.parametrize("stuck_after, room", [(557, 0), (556, 1), (500, 57)])
def test_the_edge_is_read_from_the_room_left_when_both_sleep(monkeypatch, stuck_after, room):
    """At max_dgram_qlen 512 the flood sometimes sticks at send 557, not 558: a sender
    waiting on its send buffer is woken only once most of it is free, so it sleeps with
    room for one more.  The room the kernel still gives the client's socket makes the
    edge 558 whichever way the run fell, with no other run needed."""
    monkeypatch.setattr(seed, "flood", lambda: {"outcome": "deadlock", "sent": stuck_after,
                                                "room": room})
    monkeypatch.setattr(seed, "run_example", lambda count, overall=10.0: pytest.fail("ran again"))
    found = seed.flood_deadlock_threshold()
    assert found.value == 558
    assert found.detail["trials"] == [[1000, "deadlock"]]
    assert (found.detail["stuck_after"], found.detail["room"]) == (stuck_after, room)


def test_a_deadlock_with_room_for_every_message_names_no_edge(monkeypatch):
    """A flood stuck with room for all its messages says nothing about capacity: search on."""
    monkeypatch.setattr(seed, "flood", lambda: {"outcome": "deadlock", "sent": 600, "room": 400})
    monkeypatch.setattr(seed, "run_example", fake_example(61274))
    found = seed.flood_deadlock_threshold()
    assert found.value == 61274
    assert found.detail["trials"] == [[1000, "deadlock"], [1 << 17, "deadlock"]]


@pytest.mark.parametrize("edge, value, trials", [
    (61274, 61274, [[1000, "completed"], [1 << 17, "deadlock"]]),
    (1 << 20, None, [[1000, "completed"], [1 << 17, "completed"]]),
])
def test_when_1000_complete_the_search_goes_on_to_the_ceiling(monkeypatch, edge, value, trials):
    """The ceiling's trial names the edge, from the room left once both sleep."""
    monkeypatch.setattr(seed, "flood", lambda: {"outcome": "completed", "sent": 1000})
    monkeypatch.setattr(seed, "run_example", fake_example(edge))
    found = seed.flood_deadlock_threshold()
    assert found.value == value and found.detail["trials"] == trials


def test_an_error_the_table_expects_gets_no_advice_to_raise_the_multiplier(tmp_path):
    """gVisor's sysv.shm.max_segment cannot be searched "within the budget": the table
    expects that error, so a run that matches says nothing about timeouts."""
    from ipcmatrix.session import Conformance
    block = platform.identify(uname=uname("4.4.0", GVISOR_VERSION), proc_sys="/nonexistent",
                              kernel_log=lambda: GVISOR_LOG)
    conformance = Conformance(tmp_path / "session", platform=block)
    said = ("shmget of 72057594037927936 bytes took 1.15 s: this kernel pays for a segment's "
            "size when it creates it, so the edge cannot be searched within the budget")
    expected = runner.ProbeRun("sysv", "ok", observations={"sysv.shm.max_segment": {"error": said}})
    record = conformance.judge_run("sysv.shm.max_segment", expected)
    assert record["verdict"] == "match" and "hint" not in record
    slow = runner.ProbeRun("sysv", "ok", observations={
        "sysv.shm.max_segment": {"error": "the other process did not answer within 5 s"}})
    record = conformance.judge_run("sysv.shm.max_segment", slow)
    assert record["verdict"] == "error" and "--timeout-multiplier" in record["hint"]
