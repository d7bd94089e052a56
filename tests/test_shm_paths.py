"""The shm probe: the name-length search, cleanup on every path, and a libc without shm_open."""
import errno
import os
import sys

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.probes import _libc, harness, shm
from probe_runs import named_by, record_names, values_of

DEADLINE = 20
DEV_SHM = "/dev/shm"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="POSIX shm objects are visible in /dev/shm on Linux only")


def mine_in_dev_shm():
    """Objects this process named (harness.unique_name puts our pid in every name)."""
    return {name for name in os.listdir(DEV_SHM) if named_by(os.getpid()).match(name)}


def test_padded_names_have_exactly_the_length_asked():
    assert shm.padded("/s1x1", 9) == "/s1x1xxxx"
    assert len(shm.padded(harness.unique_name("s"), 256)) == 256


# --- cleanup -------------------------------------------------------------------------------------

@linux_only
def test_the_name_search_unlinks_every_object_it_created(monkeypatch):
    created, unlinked = record_names(monkeypatch, _libc, "shm_open", "shm_unlink")
    found = shm.shm_name_limit.__wrapped__()
    assert found["past"] == "ENAMETOOLONG"
    assert len(created) > 5 and sorted(created) == sorted(unlinked)
    assert mine_in_dev_shm() == set()


@linux_only
def test_an_object_is_unlinked_when_the_probe_fails_right_after_creating_it(monkeypatch):
    real_open = _libc.shm_open
    name = harness.unique_name("t")

    def open_then_fail(*args):
        os.close(real_open(*args))
        assert os.path.exists(os.path.join(DEV_SHM, name[1:]))
        raise RuntimeError("probe failed after shm_open")

    monkeypatch.setattr(_libc, "shm_open", open_then_fail)
    with pytest.raises(RuntimeError):
        shm.try_shm_name(_libc.Names(_libc.shm_unlink), name)
    assert not os.path.exists(os.path.join(DEV_SHM, name[1:]))


@linux_only
def test_a_shm_object_is_closed_and_unlinked_when_its_block_raises():
    name = harness.unique_name("t")
    with pytest.raises(KeyError):
        with shm.shm_object(name) as fd:
            assert os.path.exists(os.path.join(DEV_SHM, name[1:]))
            raise KeyError("boom")
    assert not os.path.exists(os.path.join(DEV_SHM, name[1:]))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_names_reports_only_what_it_could_unlink():
    gone = []

    def unlink(name):
        if name == "/never-created":
            raise FileNotFoundError(name)
        gone.append(name)

    with _libc.Names(unlink) as names:
        names.add("/made")
        names.add("/never-created")
    assert gone == ["/made"] and names.unlinked == ["/made"]


# --- a C library without shm_open ------------------------------------------------------------------

def test_without_shm_open_the_posix_keys_are_unsupported_and_the_rest_unchanged():
    plain = values_of(runner.run("shm", DEADLINE))
    missing = values_of(runner.run("shm", DEADLINE, env={
        **os.environ, _libc.ENV_MISSING: "shm_open"}))
    posix = {"shm.posix.name_max", "shm.posix.too_long", "shm.posix.resize_again",
             "shm.posix.oflag_cloexec", "shm.posix.read_write", "shm.posix.o_trunc"}
    assert {key: missing[key] for key in posix} == dict.fromkeys(posix, "unsupported")
    assert set(missing) == {o.key for o in catalogue.observations_of("shm")}
    assert {k: v for k, v in missing.items() if k not in posix} == \
           {k: v for k, v in plain.items() if k not in posix}
    assert all(plain[key] != "unsupported" for key in posix)


# --- macOS's refusals, played by a shm_open that refuses the same flags ----------------------------

@pytest.fixture
def refusing_shm_open(monkeypatch):
    """shm_open failing with EINVAL whenever the flags hold ``refused`` (set by the test)."""
    real = _libc.shm_open
    refused = []

    def shm_open(name, flags, *args):
        if any(flags & flag for flag in refused):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(name, flags, *args)

    monkeypatch.setattr(_libc, "shm_open", shm_open)
    return refused


@linux_only
def test_o_cloexec_refused_as_on_macos_26_4_is_einval_and_the_plain_open_works(refusing_shm_open):
    refusing_shm_open.append(os.O_CLOEXEC)
    result = shm.posix_oflag_cloexec()
    assert result.value == "EINVAL"
    assert result.detail == {"without_o_cloexec": "ok"}
    assert mine_in_dev_shm() == set()


@linux_only
def test_o_trunc_refused_as_on_macos_is_einval_and_the_object_is_removed(refusing_shm_open):
    refusing_shm_open.append(os.O_TRUNC)
    assert shm.posix_o_trunc().value == "EINVAL"
    assert mine_in_dev_shm() == set()


@linux_only
def test_a_shm_fd_refusing_write_as_on_macos_reports_enxio_at_write(monkeypatch):
    def no_write(fd, data):
        raise OSError(errno.ENXIO, "Device not configured")

    monkeypatch.setattr(shm.os, "write", no_write)
    result = shm.posix_read_write()
    assert (result.value, result.detail) == ("ENXIO", {"failed_at": "write"})
    monkeypatch.undo()
    assert mine_in_dev_shm() == set()


def test_read_write_compares_what_was_read_with_the_mapping():
    result = shm.posix_read_write()
    assert result.value == "ok"
    assert result.detail == {"read": "ipcmatrix", "seen_in_mapping": "ipcmatrix"}
