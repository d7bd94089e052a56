"""TCP and UDP loopback observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_net = conformance_tests("net")
