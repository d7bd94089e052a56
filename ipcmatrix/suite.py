"""Build a family's conformance tests: one test per observation key.

    # suites/test_dgram.py
    from ipcmatrix.suite import conformance_tests
    test_dgram = conformance_tests("dgram")
"""
from __future__ import annotations

import json

import pytest

from ipcmatrix import catalogue, view
from ipcmatrix.verdict import explain_failure

RECORD_PROPERTY = "ipcmatrix"


def conformance_tests(family):
    """A test function parametrized over every key the family's probe declares."""
    keys = [observation.key for observation in catalogue.observations_of(family)]

    @pytest.mark.xdist_group(name=family)
    @pytest.mark.ipcmatrix_family(family)
    @pytest.mark.parametrize("key", keys, ids=keys)
    def test_observation(key, conformance, request):
        record = conformance.check(key)
        request.node.user_properties.append((RECORD_PROPERTY, json.dumps({"key": key, **record})))
        check_verdict(key, record, conformance)

    test_observation.__doc__ = f"Every {family} observation matches this platform's table."
    return test_observation


def check_verdict(key, record, conformance):
    if record["verdict"] == "match":
        return
    if record["verdict"] == "timing":
        if record.get("held") or not conformance.assert_timings:
            return
        pytest.fail(explain_failure(key, record), pytrace=False)
    if record["verdict"] == "no-expectation":
        reason = (conformance.unknown_platform.splitlines()[0] + " " +
                  conformance.unknown_platform.splitlines()[-1].strip()
                  if conformance.unknown_platform
                  else f"{conformance.table.path} has no entry for {key} on this platform")
        pytest.skip(f"{key} = {view.show(record.get('value'))}: {reason}")
    pytest.fail(explain_failure(key, record), pytrace=False)
