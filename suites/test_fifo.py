"""FIFO (named pipe) observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_fifo = conformance_tests("fifo")
