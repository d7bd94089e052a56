"""The names probe: the privilege drop behind names.connect.no_write_permission, and the
path-length search behind names.path.max_bytes."""
import os
import socket
import struct
import sys

import pytest

from ipcmatrix import runner
from ipcmatrix.probes import _unprivileged, names

DEADLINE = 20.0
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only a root run has privileges to drop "
                                f"(running as uid {os.geteuid()})")


def run_names(*keys, **env):
    environment = dict(os.environ, IPCMATRIX_ONLY=",".join(keys), **env)
    result = runner.run("names", DEADLINE, env=environment)
    assert result.status == "ok", result.message + result.stderr_tail
    assert not result.left_files and not result.left_processes
    return result.observations


@needs_root
def test_a_root_run_answers_as_the_unprivileged_user_it_dropped_to():
    record = run_names("names.connect.no_write_permission")["names.connect.no_write_permission"]
    uid, gid = _unprivileged.nobody()
    assert record["value"] == "EACCES"
    assert (record["detail"]["as_uid"], record["detail"]["as_gid"]) == (uid, gid)
    # Root itself connects through the same 0555 file: had the child not dropped, the
    # answer would have been "ok".
    assert record["detail"]["as_root"] == "ok"
    assert record["detail"]["with_write_only"] == "ok"


@needs_root
def test_where_root_cannot_drop_the_answer_is_unsupported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_unprivileged, "_drop_trial",
                        lambda: (65534, 65534, "setuid refused (simulated)"))
    measured = names.connect_no_write_permission()
    assert measured.value == "unsupported"
    assert "simulated" in measured.detail["reason"]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("room", [2, 3, names.COMPONENT + 2, names.COMPONENT + 3, 450, 700])
def test_path_of_length_builds_exactly_that_many_bytes(tmp_path, room):
    """room: bytes after the base directory; past COMPONENT + 2 a directory level is needed."""
    base = str(tmp_path / "p")
    os.mkdir(base)
    length = len(os.fsencode(base)) + room
    path = names.path_of_length(base, length)
    assert len(os.fsencode(path)) == length
    assert path.startswith(base + "/")
    assert all(len(part) <= 255 for part in path.split("/"))
    assert os.path.isdir(os.path.dirname(path))


def test_bind_length_removes_the_socket_it_made(tmp_path):
    base = str(tmp_path)
    assert names.bind_length(base, len(base) + 10) == "ok"
    assert os.listdir(tmp_path) == []


def test_the_longest_path_is_found_by_search_not_by_trying_every_length(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tried = []
    real = names.bind_length
    monkeypatch.setattr(names, "bind_length", lambda base, n: tried.append(n) or real(base, n))
    limit = names.path_limit.__wrapped__()
    assert limit["past"] == "refused-by-python"
    assert len(tried) == limit["trials"] <= 12
    assert limit["max"] in tried and limit["max"] + 1 in tried
    if sys.platform.startswith("linux"):
        assert limit["max"] == 107  # CPython refuses len >= sizeof(sun_path) = 108
    assert os.listdir(tmp_path) == []


# --- addresses built for the C library ------------------------------------------------------------

def test_a_bsd_sockaddr_un_has_sun_len_then_family_then_the_path(monkeypatch):
    monkeypatch.setattr(names, "BSD_SOCKADDR", True)
    address = names.sockaddr_un(b"abc", 5)
    assert address.raw[:6] == bytes([5, socket.AF_UNIX]) + b"abc\0"


def test_a_bsd_sun_len_never_exceeds_a_byte(monkeypatch):
    monkeypatch.setattr(names, "BSD_SOCKADDR", True)
    assert names.sockaddr_un(b"s" * 300, 302).raw[0] == 255


def test_a_linux_sockaddr_un_starts_with_a_native_short_family():
    address = names.sockaddr_un(b"abc", 5)
    assert address.raw[:5] == struct.pack("@H", socket.AF_UNIX) + b"abc"


@pytest.mark.parametrize("length", [1, 108, 201, 202, 203, 404, 999])
def test_relative_paths_have_exactly_the_length_asked(tmp_path, monkeypatch, length):
    monkeypatch.chdir(tmp_path)
    path = names.relative_path_of_length(length)
    assert len(os.fsencode(path)) == length
    assert all(len(part) <= names.COMPONENT + 1 for part in path.split("/"))  # < NAME_MAX
    assert os.path.isdir(os.path.dirname(path) or ".")


def test_the_kernel_limit_is_found_past_pythons_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = names.path_kernel_max_bytes()
    assert result.value >= names.path_max_bytes().value  # Python refuses first, never the kernel
    assert result.detail["one_more"] not in ("ok", "refused-by-python")
    assert os.listdir(tmp_path) == []
