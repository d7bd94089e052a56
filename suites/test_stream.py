"""AF_UNIX SOCK_STREAM observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_stream = conformance_tests("stream")
