"""socketpair(2) observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_socketpair = conformance_tests("socketpair")
