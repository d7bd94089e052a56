"""What the family tests share: reading a probe run that must have been clean."""
import re

import psutil

from ipcmatrix import catalogue, launcher


def children_of_this_test():
    """This process's children but the probe launcher (a runner in this process starts it
    once and keeps it): what a probe function called here left unreaped."""
    return [child for child in psutil.Process().children() if child.pid != launcher.LAUNCHER.pid]


def named_by(pid=r"\d+"):
    """A pattern for the shm and semaphore names harness.unique_name gives process ``pid``
    (/<stem><pid><4 hex digits>x<n>, "x"-padded; glibc keeps a semaphore as sem.<name>)."""
    return re.compile(rf"^(sem\.)?[a-z](?P<pid>{pid})[0-9a-f]{{4}}x\d+x*$")

# What the macOS kernel answers (xnu socreate_internal: no local SEQPACKET protosw).
REFUSE_SEQPACKET_AS_MACOS = """
import errno
_real_socketpair = socket.socketpair
def socketpair(family=socket.AF_UNIX, type=socket.SOCK_STREAM, proto=0):
    if family == socket.AF_UNIX and type == socket.SOCK_SEQPACKET:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
    return _real_socketpair(family, type, proto)
socket.socketpair = socketpair
"""


def values_of(run, every_key=False):
    """Every key's value, after checking the run was clean: no error, nothing left behind,
    no key the family does not declare (and, with ``every_key``, each one it does)."""
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert not run.left_files and not run.left_processes and not run.left_ipc_objects, run
    errors = {key: record["error"] for key, record in run.observations.items() if "error" in record}
    assert errors == {}
    declared = {o.key for o in catalogue.observations_of(run.family)}
    assert set(run.observations) <= declared
    if every_key:
        assert set(run.observations) == declared
    return {key: record["value"] for key, record in run.observations.items()}


def record_names(monkeypatch, module, create, remove):
    """Wrap ``module.create`` and ``module.remove`` (shm_open/shm_unlink, ...) so a test can
    see every name made and every name removed; returns the two lists."""
    created, removed = [], []
    real_create, real_remove = getattr(module, create), getattr(module, remove)

    def recording_create(name, *args):
        result = real_create(name, *args)
        created.append(name)
        return result

    def recording_remove(name):
        real_remove(name)
        removed.append(name)

    monkeypatch.setattr(module, create, recording_create)
    monkeypatch.setattr(module, remove, recording_remove)
    return created, removed
