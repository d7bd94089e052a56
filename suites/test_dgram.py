"""AF_UNIX SOCK_DGRAM observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_dgram = conformance_tests("dgram")
