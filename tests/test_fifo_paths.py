"""The FIFO probe: blocking opens are bounded, reaped and released; file types are named."""
import os
import socket
import sys
import time

import psutil
import pytest

from ipcmatrix.probes import fifo, harness, pipe
from probe_runs import children_of_this_test


def test_a_reader_without_writer_blocks_then_a_writer_releases_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    result = fifo.open_read_without_writer()
    assert result.value == "blocks"
    assert result.detail["released_by_writer"] is True
    assert time.monotonic() - started < 10 * harness.block_window() + 1
    assert children_of_this_test() == []  # the waiting child was reaped
    assert os.listdir(tmp_path) == []         # and the FIFO removed


def test_a_child_stuck_in_open_is_killed_when_the_block_ends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fifo.fifo() as path, fifo.opening(path, os.O_RDONLY) as (value, child):
        assert value == "blocks"
        assert psutil.pid_exists(child.pid)
        pid = child.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert children_of_this_test() == []


def test_an_open_that_returns_at_once_is_not_blocks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fifo.fifo() as path, fifo.opening(path, os.O_RDONLY | os.O_NONBLOCK) as (value, _):
        assert value == "ok"


def test_file_types_are_named_from_st_mode(tmp_path):
    regular = tmp_path / "r"
    regular.write_text("")
    os.mkfifo(tmp_path / "p")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s"))
        names = {name: fifo.file_type(os.lstat(tmp_path / name).st_mode) for name in "rps"}
    assert names == {"r": "regular", "p": "fifo", "s": "socket"}
    assert fifo.file_type(os.stat(tmp_path).st_mode) == "directory"


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS FIFOs are socket pairs, not pipes")
def test_a_fifo_holds_what_a_pipe_holds_and_leaves_no_fifo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fifo.capacity().value == pipe.capacity().value
    assert os.listdir(tmp_path) == []
