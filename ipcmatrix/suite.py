"""Build a family's conformance tests: one test per observation key.

    # suites/test_dgram.py
    from ipcmatrix.suite import conformance_tests
    test_dgram = conformance_tests("dgram")
"""
from __future__ import annotations

import json

import pytest

from ipcmatrix import catalogue
from ipcmatrix.verdict import outcome_for

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
    outcome, message = outcome_for(
        key, record, assert_timings=conformance.assert_timings,
        unknown_platform=conformance.unknown_platform,
        table_path=conformance.table.path if conformance.table else None)
    if outcome == "skipped":
        pytest.skip(message)
    if outcome == "failed":
        pytest.fail(message, pytrace=False)
