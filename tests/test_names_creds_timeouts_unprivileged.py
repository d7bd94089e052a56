"""The names, creds and timeouts families measured by an unprivileged user: a forked child
gives up root (as a CI runner's user never had it) and measures every key in a work
directory of its own; no key may become an error or leave anything behind."""
import importlib
import os
import shutil
import tempfile

import pytest

from ipcmatrix.probes import _unprivileged, harness


def measure_every_key(family):
    """In the unprivileged child: the family's records, as harness.main would write them."""
    module = importlib.import_module(f"ipcmatrix.probes.{family}")
    workdir = tempfile.mkdtemp(prefix="ipcm-", dir="/tmp")
    try:
        return {key: harness.measure(key, fn, workdir, index, budget=10.0)
                for index, (key, fn) in enumerate(harness.observations_of(module))}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="this run is already unprivileged "
                    f"(uid {os.geteuid()}); the suites themselves cover it")
@pytest.mark.parametrize("family", ["names", "creds", "timeouts"])
def test_every_key_is_measured_by_an_unprivileged_user(family):
    uid, gid = _unprivileged.nobody()
    # Imported here, and the child leaves the checkout before it drops root: nobody may not
    # be able to reach a checkout under a 0700 directory.
    importlib.import_module(f"ipcmatrix.probes.{family}")

    def leave_the_checkout_and_drop():
        os.chdir("/")
        _unprivileged.drop_to(uid, gid)

    result = harness.in_child(measure_every_key, family, timeout=30.0,
                              setup=leave_the_checkout_and_drop)
    assert result.error is None, result.error
    records = result.value
    assert records, "no observation ran"
    for key, record in records.items():
        assert "error" not in record, (key, record)
        assert "leftovers" not in record, (key, record)
    if family == "names":
        refused = records["names.connect.no_write_permission"]
        assert refused["value"] == "EACCES"
        assert refused["detail"]["as_uid"] == uid
        assert "as_root" not in refused["detail"]  # it was never root
    if family == "creds":
        assert records["creds.peer.uid_matches"]["detail"]["reported"]["uid"] == uid
