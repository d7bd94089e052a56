"""What the family tests share: reading a probe run that must have been clean."""
from ipcmatrix import catalogue

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
    assert not run.left_files and not run.left_processes, run
    errors = {key: record["error"] for key, record in run.observations.items() if "error" in record}
    assert errors == {}
    declared = {o.key for o in catalogue.observations_of(run.family)}
    assert set(run.observations) <= declared
    if every_key:
        assert set(run.observations) == declared
    return {key: record["value"] for key, record in run.observations.items()}
