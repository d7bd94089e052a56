"""The course example's outcomes, including the ones this kernel never produces by itself."""
import errno
import os

import pytest

from ipcmatrix.probes import seed


@pytest.fixture(autouse=True)
def in_a_scratch_directory(tmp_path, monkeypatch):
    """The example binds short relative names, as the course's programs do."""
    monkeypatch.chdir(tmp_path)
    yield
    assert os.listdir(tmp_path) == []  # every socket file removed


def test_the_example_runs_as_the_notes_show():
    result = seed.run_example(8)
    assert result["outcome"] == "completed"
    assert result["replies"] == [f"[{i}](ABC)" for i in range(1, 9)]
    assert result["server_received"] == "ABC" and result["saw_path"] is True


def test_a_server_whose_replies_fail_leaves_both_reading(monkeypatch):
    """What a platform that fails a full send (ENOBUFS) instead of blocking it can do."""
    replies = []

    def reply_until_the_client_is_full(fd, message, address):
        replies.append(message)  # the server child's own copy of the list
        if len(replies) > 3:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        fd.sendto(message, address)

    monkeypatch.setattr(seed, "reply", reply_until_the_client_is_full)
    result = seed.run_example(8)
    assert result["outcome"] == "replies-lost"
    assert (result["sent"], result["received"]) == (8, 3)
    assert result["sender_error"] == "ENOBUFS"


def test_the_flood_here_is_a_deadlock_at_the_edge_the_queues_set():
    result = seed.run_example(1000)
    assert result["outcome"] == "deadlock"
    assert result["sent"] < 1000 and result["sender_error"] is None
