"""Shared-memory observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_shm = conformance_tests("shm")
