"""System V IPC observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_sysv = conformance_tests("sysv")
