"""POSIX message queue observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_mq = conformance_tests("mq")
