"""The pipe probe: its capacity shortcut, its record checker, and the path without F_SETPIPE_SZ.

macOS and FreeBSD have no F_SETPIPE_SZ (CPython exports it on Linux only); hiding the
constants here makes the probe take their path on this kernel.
"""
import os
import sys

import pytest

from ipcmatrix import catalogue, runner
from ipcmatrix.probes import pipe
from probe_runs import values_of

DEADLINE = 20


def fill_empty_pipe(chunk):
    with pipe.Pipe() as fd:
        os.set_blocking(fd.write_end, False)
        return pipe.fill_nonblocking(fd.write_end, chunk or pipe.pipe_buf(fd.write_end))


def test_the_pipe_buf_shortcut_counts_what_single_bytes_count():
    quick, quick_writes = fill_empty_pipe(None)
    literal, literal_writes = fill_empty_pipe(1)   # the definition, done literally
    assert quick == literal
    assert literal_writes == literal  # every literal write took exactly one byte
    assert quick_writes < literal_writes // 100  # ... and the shortcut is much cheaper
    assert pipe.capacity().value == literal


@pytest.mark.parametrize("size", [4, 512])
def test_whole_records_pass_and_any_interleaving_fails(size):
    a, b = b"A" * size, b"B" * size
    assert pipe.records_intact(a + b + b + a, size, writers=2, count=2)
    split = a[:size // 2] + b + a[size // 2:] + b + a   # one record cut in two by another
    assert not pipe.records_intact(split, size, writers=2, count=2)
    assert not pipe.records_intact(a + b + b, size, writers=2, count=2)     # one missing
    assert not pipe.records_intact(a + a + a + b, size, writers=2, count=2)  # wrong share


def test_a_pipe_shared_by_nothing_blocks_a_token_reader_until_the_byte():
    result = pipe.pipe_token()
    assert result.value is True
    assert result.detail["token"] == "!"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux-only")
def test_without_f_setpipe_sz_resize_is_unsupported_and_the_rest_unchanged():
    plain = values_of(runner.run("pipe", DEADLINE))
    hidden = values_of(runner.run("pipe", DEADLINE, env={
        **os.environ, "IPCMATRIX_HIDE": "fcntl.F_SETPIPE_SZ,fcntl.F_GETPIPE_SZ"}))
    assert plain["pipe.resize"] == "ok"
    assert hidden["pipe.resize"] == "unsupported"
    assert set(hidden) == {o.key for o in catalogue.observations_of("pipe")}
    del plain["pipe.resize"], hidden["pipe.resize"]
    assert hidden == plain


def test_sigpipe_kills_only_a_child_with_the_default_action():
    assert pipe.no_reader_sigpipe_kills().value is True
    # The same write in this process (SIGPIPE ignored by Python) is just EPIPE.
    assert pipe.write_without_reader() == "EPIPE"


def test_pipe2_gives_both_flags_here_and_is_unsupported_without_it():
    assert pipe.pipe2().value == "ok"
    hidden = runner.run("pipe", DEADLINE, env={**os.environ, "IPCMATRIX_HIDE": "os.pipe2",
                                               "IPCMATRIX_ONLY": "pipe.pipe2"})
    assert values_of(hidden) == {"pipe.pipe2": "unsupported"}


def test_pipe2_that_drops_a_flag_is_reported_as_ignored(monkeypatch):
    real = os.pipe2
    monkeypatch.setattr(os, "pipe2", lambda flags: real(flags & ~os.O_NONBLOCK))
    assert pipe.pipe2().value == "ignored:nonblock"
