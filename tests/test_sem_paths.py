"""The sem probe's other-platform paths, run here: missing functions and macOS's ENOSYS stubs.

macOS has no sem_timedwait at all, and its sem_init and sem_getvalue exist but fail with
ENOSYS.  IPCMATRIX_MISSING_SYMBOLS makes probes._libc report a function as absent;
a fake libc function that sets errno stands in for the stubs.
"""
import ctypes
import errno
import os
import sys

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.probes import _libc, harness, pthread, sem
from probe_runs import named_by, record_names, values_of

DEADLINE = 20
DEV_SHM = "/dev/shm"


def failing_with(number, result=-1):
    """A stand-in for a C function that fails: sets errno as libc would and returns ``result``."""
    def stub(*args):
        ctypes.set_errno(number)
        return result
    return stub


@pytest.fixture
def stubs(monkeypatch):
    """Replace chosen libc functions with stubs; every other lookup is the real one."""
    replaced = {}
    real_function = _libc.function

    def function(name, *args, **kwargs):
        if name in replaced:
            return replaced[name]
        return real_function(name, *args, **kwargs)

    monkeypatch.setattr(_libc, "function", function)
    return replaced


def shm_entries():
    """This process's named semaphores (glibc: /dev/shm/sem.<name>, the name holding our pid)."""
    if not os.path.isdir(DEV_SHM):
        return set()
    return {name for name in os.listdir(DEV_SHM) if named_by(os.getpid()).match(name) and name.startswith("sem.")}


# --- missing functions, through the runner -----------------------------------------------------

def values_of_families(families, env=None):
    values = {}
    for family in families:
        values.update(values_of(runner.run(family, DEADLINE, env=env)))
    return values


def test_missing_functions_make_their_keys_unsupported_and_nothing_else_changes():
    families = ("sem", "pthread")
    plain = values_of_families(families)
    missing = values_of_families(families, env={
        **os.environ,
        _libc.ENV_MISSING: "sem_timedwait,sem_init,pthread_mutexattr_setpshared"})
    gone = {"sem.timedwait", "sem.unnamed_process_shared", "sync.pthread_mutex_process_shared",
            "sync.pthread_cond_process_shared", "sync.pthread_mutex_robust"}
    assert {key: missing[key] for key in gone} == dict.fromkeys(gone, "unsupported")
    assert all(plain[key] != "unsupported" for key in gone)
    assert set(missing) == {o.key for f in families for o in catalogue.observations_of(f)}
    assert {k: v for k, v in missing.items() if k not in gone} == \
           {k: v for k, v in plain.items() if k not in gone}


def test_the_lookup_honours_the_missing_list_even_for_functions_libc_has(monkeypatch):
    assert _libc.available("sem_post")
    monkeypatch.setenv(_libc.ENV_MISSING, " sem_post , shm_open")
    assert not _libc.available("sem_post") and not _libc.available("shm_open")
    with pytest.raises(_libc.Missing, match="sem_post"):
        _libc.sem_post(0)
    assert _libc.available("sem_wait")


def test_without_sem_open_the_named_keys_are_unsupported(monkeypatch):
    monkeypatch.setenv(_libc.ENV_MISSING, "sem_open")
    assert sem.named_across_processes() == "unsupported"
    assert sem.named_name_max() == "unsupported"
    assert sem.named_too_long() == "unsupported"
    assert sem.getvalue() == "unsupported"
    assert sem.timedwait().value == "unsupported"


# --- macOS's stubs ---------------------------------------------------------------------------------

def test_a_sem_init_stub_failing_with_enosys_is_reported_as_enosys(stubs):
    stubs["sem_init"] = failing_with(errno.ENOSYS)
    assert sem.unnamed_process_shared() == "ENOSYS"


def test_a_sem_getvalue_stub_failing_with_enosys_is_reported_and_the_semaphore_removed(stubs):
    stubs["sem_getvalue"] = failing_with(errno.ENOSYS)
    assert sem.getvalue() == "ENOSYS"
    assert shm_entries() == set()


@pytest.mark.parametrize("sem_failed", [0, ctypes.c_void_p(-1).value],
                         ids=["glibc-freebsd-null", "macos-minus-one"])
def test_sem_open_failure_is_recognised_in_both_sem_failed_spellings(stubs, sem_failed):
    stubs["sem_open"] = failing_with(errno.ENAMETOOLONG, result=sem_failed)
    with pytest.raises(OSError) as failure:
        _libc.sem_open("/x", os.O_CREAT, 0o600, 0)
    assert failure.value.errno == errno.ENAMETOOLONG
    assert sem.try_sem_name(_libc.Names(lambda name: None), "/x") == "ENAMETOOLONG"


def test_a_pthread_mutexattr_setpshared_refusal_is_its_errno(stubs):
    stubs["pthread_mutexattr_setpshared"] = lambda attr, pshared: errno.EINVAL  # pthread style
    assert pthread.pthread_mutex_process_shared() == "EINVAL"


# --- what the real calls do here -------------------------------------------------------------------

def test_sem_timedwait_waits_until_its_deadline_then_times_out():
    result = sem.timedwait()
    assert result.value == "ETIMEDOUT"
    assert result.detail["waited_ms"] >= 0.8 * harness.block_window() * 1000


def test_the_mutex_keeps_every_update_whole():
    result = pthread.pthread_mutex_process_shared()
    assert result.value == "ok"
    assert result.detail["counted"] == pthread.PROCESSES * pthread.ROUNDS


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the race needs two cores to show reliably")
def test_the_mutex_test_could_fail_without_a_lock_updates_are_lost():
    # The probe's own rounds: its control must lose updates as the probe runs it.
    with pthread.shared_page() as memory:
        counts = []
        for _ in range(3):
            counts.append(pthread.count_together(memory))
            if counts[-1] < pthread.PROCESSES * pthread.ROUNDS:
                break
    assert counts[-1] < pthread.PROCESSES * pthread.ROUNDS, counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="named semaphores show in /dev/shm on Linux")
def test_the_name_search_leaves_no_semaphore_behind(monkeypatch):
    created, unlinked = record_names(monkeypatch, _libc, "sem_open", "sem_unlink")
    found = sem.sem_name_limit.__wrapped__()
    assert found["past"] == "ENAMETOOLONG"
    assert len(created) > 5 and sorted(created) == sorted(unlinked)
    assert shm_entries() == set()


# --- the mutex's control, and timeouts that are never values ------------------------------------

def test_a_control_that_loses_no_updates_is_an_error_not_a_pass(monkeypatch):
    monkeypatch.setattr(pthread, "PROCESSES", 1)  # one process alone never races
    with pytest.raises(harness.Unmeasurable, match="contention could not be shown"):
        pthread.pthread_mutex_process_shared()


def test_counting_that_does_not_finish_in_time_is_an_error_never_stuck(monkeypatch):
    monkeypatch.setattr(pthread, "ROUNDS", 10_000_000)
    monkeypatch.setattr(pthread, "CHILD_TIMEOUT", 0.3)
    with pthread.shared_page() as memory:
        with pytest.raises(harness.Unmeasurable, match="did not finish within 0.3 s"):
            pthread.count_together(memory)


def test_a_named_waiter_that_says_nothing_timed_out_rather_than_failed_to_open(monkeypatch):
    monkeypatch.setattr(sem, "NAMED_WAITER", "import time; time.sleep(30)")
    monkeypatch.setattr(sem, "CHILD_TIMEOUT", 0.3)
    with pytest.raises(harness.Unmeasurable, match="did not say within 0.3 s") as raised:
        sem.named_across_processes()
    assert "could not open" not in str(raised.value)


def test_a_named_waiter_that_fails_says_why_it_could_not_open(monkeypatch):
    monkeypatch.setattr(sem, "NAMED_WAITER", "import sys; sys.exit('sem_open: ENOENT')")
    with pytest.raises(harness.Unmeasurable, match="could not open the semaphore: sem_open: ENOENT"):
        sem.named_across_processes()


# --- condition variables and robust mutexes ------------------------------------------------------

def test_the_condvar_waiter_is_woken_by_another_process():
    result = pthread.pthread_cond_process_shared()
    assert result.value == "ok", result.detail
    assert result.detail["cond_waits"] >= 1  # it really waited, then was signalled


def test_a_condattr_setpshared_refusal_is_its_errno(stubs):
    stubs["pthread_condattr_setpshared"] = failing_with(errno.EINVAL, result=errno.EINVAL)
    assert pthread.pthread_cond_process_shared() == "EINVAL"


def test_without_robust_mutexes_as_on_macos_the_key_is_unsupported(monkeypatch):
    monkeypatch.setenv(_libc.ENV_MISSING, "pthread_mutexattr_setrobust")
    result = pthread.pthread_mutex_robust()
    assert result.value == "unsupported"


def test_an_owner_dying_with_a_robust_mutex_gives_eowner_dead_and_it_recovers():
    result = pthread.pthread_mutex_robust()
    assert result.value == "EOWNERDEAD"
    assert result.detail == {"consistent": "ok", "unlock": "ok", "relock": "ok"}


def test_the_robust_check_could_fail_a_plain_mutex_blocks_its_next_locker(stubs, monkeypatch):
    stubs["pthread_mutexattr_setrobust"] = lambda attr, robust: 0  # accepted, not applied
    monkeypatch.setattr(pthread, "CHILD_TIMEOUT", 0.5)
    result = pthread.pthread_mutex_robust()
    assert result.value == "blocks"
    assert result.detail["owner"] == "exited and reaped"
