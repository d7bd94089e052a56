"""POSIX semaphore observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_sem = conformance_tests("sem")
